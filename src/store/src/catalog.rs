//! The catalog: which series and VMs exist. A log of JSON records, replayed at open; a series id
//! is written (and synced) before any point of it reaches the WAL.

use crate::log_file::{read_log, LogKind, LogWriter};
use crate::types::{ValueKind, VmId, VmMeta};
use crate::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub id: u32,
    pub vm: VmId,
    pub metric: String,
    pub kind: ValueKind,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Series(SeriesInfo),
    Vm(VmMeta),
    /// Ids whose series records a damaged catalog lost while data of theirs survives: never
    /// given to a new series, which would otherwise be served that data as its own.
    Lost {
        below: u32,
    },
}

#[derive(Debug)]
pub struct Catalog {
    log: LogWriter,
    pub series: Vec<SeriesInfo>,
    by_key: HashMap<(VmId, String), u32>,
    pub vms: BTreeMap<VmId, VmMeta>,
    pub skipped_records: usize,
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut catalog = Self {
            log: if path.exists() {
                let (records, report) = read_log(path, LogKind::Catalog)?;
                let mut catalog_entries = Vec::new();
                let mut skipped = report.corrupt.len();
                for record in records {
                    match serde_json::from_slice::<Entry>(&record.payload) {
                        Ok(entry) => catalog_entries.push(entry),
                        Err(_) => skipped += 1,
                    }
                }
                let log = LogWriter::append_to(path, report.good_end)?;
                let mut c = Self::empty(log);
                c.skipped_records = skipped;
                for entry in catalog_entries {
                    c.apply(entry);
                }
                return Ok(c);
            } else {
                LogWriter::create(path, LogKind::Catalog)?
            },
            series: Vec::new(),
            by_key: HashMap::new(),
            vms: BTreeMap::new(),
            skipped_records: 0,
        };
        catalog.log.sync()?;
        Ok(catalog)
    }

    fn empty(log: LogWriter) -> Self {
        Self {
            log,
            series: Vec::new(),
            by_key: HashMap::new(),
            vms: BTreeMap::new(),
            skipped_records: 0,
        }
    }

    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Series(info) => {
                // Ids are dense; a damaged catalog may leave holes, which stay unused.
                let id = info.id as usize;
                self.pad_to(id + 1);
                self.by_key.insert((info.vm, info.metric.clone()), info.id);
                self.series[id] = info;
            }
            Entry::Vm(meta) => {
                self.vms.insert(meta.id, meta);
            }
            Entry::Lost { below } => self.pad_to(below as usize),
        }
    }

    fn pad_to(&mut self, len: usize) {
        if self.series.len() < len {
            self.series.resize(
                len,
                SeriesInfo {
                    id: u32::MAX,
                    vm: 0,
                    metric: String::new(),
                    kind: ValueKind::F64,
                },
            );
        }
    }

    /// Whether `id` names a series this catalog knows.
    pub fn knows(&self, id: u32) -> bool {
        self.series.get(id as usize).is_some_and(|s| s.id == id)
    }

    /// Keeps every id below `below` from new series, for the data found of series whose
    /// records were lost.
    pub fn retire_below(&mut self, below: u32) -> Result<(), StoreError> {
        if (below as usize) <= self.series.len() {
            return Ok(());
        }
        self.write(&Entry::Lost { below })?;
        self.pad_to(below as usize);
        Ok(())
    }

    fn write(&mut self, entry: &Entry) -> Result<(), StoreError> {
        let payload = serde_json::to_vec(entry).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.log.append(&[&payload])?;
        self.log.sync()?;
        Ok(())
    }

    pub fn register_vm(&mut self, meta: VmMeta) -> Result<(), StoreError> {
        if self.vms.get(&meta.id) == Some(&meta) {
            return Ok(());
        }
        self.write(&Entry::Vm(meta.clone()))?;
        self.vms.insert(meta.id, meta);
        Ok(())
    }

    pub fn lookup(&self, vm: VmId, metric: &str) -> Option<&SeriesInfo> {
        self.by_key
            .get(&(vm, metric.to_string()))
            .and_then(|id| self.series.get(*id as usize))
    }

    /// The series (vm, metric), created with `kind` if new.
    pub fn get_or_create(
        &mut self,
        vm: VmId,
        metric: &str,
        kind: ValueKind,
    ) -> Result<SeriesInfo, StoreError> {
        if let Some(info) = self.lookup(vm, metric) {
            return Ok(info.clone());
        }
        let info = SeriesInfo {
            id: self.series.len() as u32,
            vm,
            metric: metric.to_string(),
            kind,
        };
        self.write(&Entry::Series(info.clone()))?;
        self.apply(Entry::Series(info.clone()));
        Ok(info)
    }

    pub fn of_vm(&self, vm: VmId) -> impl Iterator<Item = &SeriesInfo> {
        self.series
            .iter()
            .filter(move |s| s.vm == vm && s.id != u32::MAX)
    }
}
