//! A connection to a libvirt daemon (built with the `libvirt` feature).

use crate::domain_xml::DomainXml;
use crate::migration::{MigrationReport, MigrationRequest};
use crate::stats::DomainStats;
use crate::Error;
use augur_plan::cost::Method;
use tracing::{info, warn};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

fn lv(e: virt::error::Error) -> Error {
    Error::Libvirt(e.to_string())
}

/// One libvirt connection, e.g. `qemu:///system`.
#[derive(Debug)]
pub struct Connection {
    conn: Connect,
    uri: String,
}

/// The stats groups augurd asks for every interval.
pub const STATS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK
    | sys::VIR_DOMAIN_STATS_DIRTYRATE;

impl Connection {
    pub fn open(uri: &str) -> Result<Self, Error> {
        // Errors come back as values and are reported by the caller; libvirt's default handler
        // would also print each to stderr.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| Error::Connect {
            uri: uri.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            conn,
            uri: uri.to_string(),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Running domains, as their XML describes them.
    pub fn running_domains(&self) -> Result<Vec<DomainXml>, Error> {
        let domains = self
            .conn
            .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(lv)?;
        // A domain that vanished between the listing and its XML (a migration) is skipped, not
        // an error for the whole list.
        Ok(domains
            .iter()
            .filter_map(|d| DomainXml::parse(&d.xml_desc(0).ok()?).ok())
            .collect())
    }

    /// Bulk stats of every running domain, in one call.
    pub fn all_stats(&self) -> Result<Vec<DomainStats>, Error> {
        bulk::all_domain_stats(
            &self.conn,
            STATS,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
        )
    }

    /// Starts QEMU's page-sampling dirty-rate measurement over `seconds`; the result appears in
    /// the bulk stats (`dirtyrate.*`) when it is done.
    pub fn start_dirty_rate(&self, name: &str, seconds: i32) -> Result<(), Error> {
        let domain = self.conn_domain(name)?;
        bulk::start_dirty_rate_calc(&domain, seconds)
    }

    fn conn_domain(&self, name: &str) -> Result<Domain, Error> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(|e| Error::NoDomain {
                name: name.to_string(),
                reason: e.to_string(),
            })
    }

    /// The domain's XML as the destination should define it (`--migratable`).
    pub fn migratable_xml(&self, name: &str) -> Result<String, Error> {
        self.conn_domain(name)?
            .xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE)
            .map_err(lv)
    }

    /// Live-migrates `name` peer to peer; blocks until libvirt says it is done. On failure the
    /// domain stays (or is resumed) on the source, which the report checks and says.
    pub fn migrate(&self, name: &str, request: &MigrationRequest) -> MigrationReport {
        let mut report = MigrationReport {
            domain: name.to_string(),
            method: request.method.as_str().to_string(),
            ..Default::default()
        };
        let domain = match self.conn_domain(name) {
            Ok(d) => d,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let params = virt::domain::MigrateParameters {
            uri: request.migrate_uri.clone(),
            dest_xml: request.dest_xml.clone(),
            ..Default::default()
        };
        let strings = [
            Some(request.dest_uri.as_str()),
            request.migrate_uri.as_deref(),
            request.dest_xml.as_deref(),
        ];
        if strings.iter().flatten().any(|s| s.contains('\0')) {
            report.error = Some("a NUL byte in the destination URI or XML".into());
            report.running_on_source = true;
            return report;
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // However this function leaves (a panic in the bindings included), the watcher stops.
        let _stop_watcher = StopOnDrop(done.clone());
        let watcher = progress_watcher(
            self.uri.clone(),
            name.to_string(),
            request.method == Method::PostCopy,
            request.give_up_after,
            done.clone(),
        );
        let result = domain.migrate_to_uri3(Some(&request.dest_uri), params, request.flags());
        done.store(true, std::sync::atomic::Ordering::Release);
        let progress = watcher.join().unwrap_or_default();
        report.iterations = progress.mem_iteration;
        report.bytes = progress.data_processed;
        match result {
            Ok(()) => {
                report.ok = true;
                // The source forgets the domain (it was undefined there); the destination keeps
                // the completed job's statistics.
                let completed = Connection::open(&request.dest_uri).and_then(|dest| {
                    bulk::job_stats(
                        &dest.conn_domain(name)?,
                        sys::VIR_DOMAIN_JOB_STATS_COMPLETED,
                    )
                });
                match completed {
                    Ok(job) => {
                        report.total_ms = job.get("time_elapsed");
                        report.downtime_ms = job.get("downtime");
                        report.bytes = job
                            .get("data_processed")
                            .or(job.get("memory_processed"))
                            .or(report.bytes);
                        report.iterations = job.get("memory_iteration").or(report.iterations);
                    }
                    Err(e) => {
                        warn!(domain = name, error = %e, "no completed-job statistics from the destination")
                    }
                }
            }
            Err(e) => report.error = Some(e.to_string()),
        }
        report.running_on_source = self
            .conn_domain(name)
            .and_then(|d| d.is_active().map_err(lv))
            .unwrap_or(false);
        report
    }
}

/// A libvirt job: its type (`VIR_DOMAIN_JOB_*`) and its typed statistics.
#[derive(Debug)]
struct JobStats {
    kind: i32,
    stats: DomainStats,
}

impl JobStats {
    fn running(&self) -> bool {
        self.kind != sys::VIR_DOMAIN_JOB_NONE as i32
    }

    fn get(&self, field: &str) -> Option<u64> {
        self.stats.get(field)
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// What the last progress poll saw.
#[derive(Debug, Default)]
struct Progress {
    mem_iteration: Option<u64>,
    data_processed: Option<u64>,
}

/// Polls the source's job while a migration runs: logs its progress, switches a post-copy
/// migration over once the first pre-copy pass is done, aborts the job once `give_up_after`
/// has passed, and returns the last figures seen.
fn progress_watcher(
    uri: String,
    name: String,
    post_copy: bool,
    give_up_after: Option<std::time::Duration>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Progress> {
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let mut progress = Progress::default();
        let watched = Connection::open(&uri)
            .and_then(|conn| conn.conn_domain(&name).map(|domain| (conn, domain)));
        let (_conn, domain) = match watched {
            Ok(watched) => watched,
            Err(error) => {
                warn!(domain = %name, %error, post_copy, "migration progress cannot be watched: no progress figures, no switch to post-copy, no time limit");
                return progress;
            }
        };
        let mut switched = false;
        let mut aborted = false;
        let mut last_log = std::time::Instant::now();
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let Ok(job) = bulk::job_stats(&domain, 0) else {
                continue;
            };
            if !job.running() {
                continue;
            }
            let pass = job.get("memory_iteration");
            progress.mem_iteration = pass.or(progress.mem_iteration);
            progress.data_processed = job.get("data_processed").or(progress.data_processed);
            if last_log.elapsed() >= std::time::Duration::from_secs(1) {
                last_log = std::time::Instant::now();
                info!(
                    domain = %name,
                    processed = job.get("data_processed"),
                    remaining = job.get("data_remaining"),
                    pass,
                    dirty_rate = job.get("memory_dirty_rate"),
                    "migrating"
                );
            }
            if !aborted && give_up_after.is_some_and(|limit| started.elapsed() >= limit) {
                aborted = true;
                warn!(domain = %name, after = ?started.elapsed(), "migration past its time limit: aborting it; the domain stays here");
                if let Err(e) = bulk::abort_job(&domain) {
                    warn!(domain = %name, error = %e, "could not abort the migration");
                }
            }
            // QEMU counts its setup as the first pass: 2 means the first full copy is done, when
            // virsh's --postcopy-after-precopy switches too.
            if post_copy && !switched && pass.unwrap_or(0) >= 2 {
                switched = true;
                if let Err(e) = bulk::start_post_copy(&domain) {
                    warn!(domain = %name, error = %e, "could not switch to post-copy");
                }
            }
        }
        progress
    })
}

/// The calls the `virt` crate does not wrap (or wraps without freeing): the only unsafe code of
/// the driver.
#[allow(unsafe_code)]
mod bulk {
    use super::*;
    use crate::stats::ParamValue;
    use std::ffi::CStr;

    fn last_error() -> Error {
        Error::Libvirt(virt::error::Error::last_error().to_string())
    }

    /// Frees the record list however the caller leaves.
    struct Records(*mut sys::virDomainStatsRecordPtr);

    impl Drop for Records {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: the list came from virConnectGetAllDomainStats and is freed once.
                unsafe { sys::virDomainStatsRecordListFree(self.0) };
            }
        }
    }

    /// # Safety
    /// `p` points to a valid typed parameter whose string, if any, outlives the call.
    unsafe fn param(p: &sys::virTypedParameter) -> Option<(String, ParamValue)> {
        // The field is a NUL-terminated name in a fixed 80-byte array.
        let bytes: Vec<u8> = p
            .field
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let field = String::from_utf8(bytes).ok()?;
        // SAFETY: the union member read is the one `type_` names (libvirt's contract).
        let value = unsafe {
            match p.type_ as u32 {
                sys::VIR_TYPED_PARAM_INT => ParamValue::Int(i64::from(p.value.i)),
                sys::VIR_TYPED_PARAM_UINT => ParamValue::UInt(u64::from(p.value.ui)),
                sys::VIR_TYPED_PARAM_LLONG => ParamValue::Int(p.value.l),
                sys::VIR_TYPED_PARAM_ULLONG => ParamValue::UInt(p.value.ul),
                sys::VIR_TYPED_PARAM_DOUBLE => ParamValue::Double(p.value.d),
                sys::VIR_TYPED_PARAM_BOOLEAN => ParamValue::Bool(p.value.b != 0),
                sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                    ParamValue::Text(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                }
                _ => return None,
            }
        };
        Some((field, value))
    }

    pub fn all_domain_stats(
        conn: &Connect,
        stats: u32,
        flags: u32,
    ) -> Result<Vec<DomainStats>, Error> {
        let mut list: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
        // SAFETY: the connection is open for the borrow of `conn`; libvirt fills `list`.
        let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut list, flags) };
        if n < 0 {
            return Err(last_error());
        }
        let records = Records(list);
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            // SAFETY: the list holds `n` valid record pointers until `records` is dropped.
            let record = unsafe { &**records.0.add(i) };
            // SAFETY: the record's domain is valid while the record is; the name is owned by it.
            let name = unsafe {
                let p = sys::virDomainGetName(record.dom);
                if p.is_null() {
                    continue;
                }
                CStr::from_ptr(p).to_string_lossy().into_owned()
            };
            let count = usize::try_from(record.nparams).unwrap_or(0);
            let params = if record.params.is_null() || count == 0 {
                &[][..]
            } else {
                // SAFETY: `params` holds `nparams` entries owned by the record.
                unsafe { std::slice::from_raw_parts(record.params, count) }
            };
            out.push(DomainStats {
                name,
                // SAFETY: each entry is a valid typed parameter owned by the record.
                params: params.iter().filter_map(|p| unsafe { param(p) }).collect(),
            });
        }
        Ok(out)
    }

    /// A job's type and statistics (`virDomainGetJobStats`), freed before returning. The
    /// `virt` crate's wrapper builds a Vec from the null pointer libvirt returns when no job
    /// runs, so this one is used instead.
    pub fn job_stats(domain: &Domain, flags: u32) -> Result<JobStats, Error> {
        let mut kind: std::os::raw::c_int = 0;
        let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
        let mut nparams: std::os::raw::c_int = 0;
        // SAFETY: the domain handle is valid for the borrow; libvirt fills the out-pointers.
        let rc = unsafe {
            sys::virDomainGetJobStats(domain.as_ptr(), &mut kind, &mut params, &mut nparams, flags)
        };
        if rc < 0 {
            return Err(last_error());
        }
        let count = usize::try_from(nparams).unwrap_or(0);
        let fields = if params.is_null() || count == 0 {
            Vec::new()
        } else {
            // SAFETY: libvirt returned `nparams` valid entries at `params`.
            let slice = unsafe { std::slice::from_raw_parts(params, count) };
            // SAFETY: each entry is a valid typed parameter until freed below.
            slice.iter().filter_map(|p| unsafe { param(p) }).collect()
        };
        if !params.is_null() {
            // SAFETY: `params` came from libvirt with `nparams` entries and is freed once.
            unsafe { sys::virTypedParamsFree(params, nparams) };
        }
        Ok(JobStats {
            kind,
            stats: DomainStats {
                name: String::new(),
                params: fields,
            },
        })
    }

    pub fn start_dirty_rate_calc(domain: &Domain, seconds: i32) -> Result<(), Error> {
        // SAFETY: the domain handle is valid for the borrow.
        let rc = unsafe { sys::virDomainStartDirtyRateCalc(domain.as_ptr(), seconds, 0) };
        if rc < 0 {
            return Err(last_error());
        }
        Ok(())
    }

    pub fn abort_job(domain: &Domain) -> Result<(), Error> {
        // SAFETY: the domain handle is valid for the borrow.
        let rc = unsafe { sys::virDomainAbortJob(domain.as_ptr()) };
        if rc < 0 {
            return Err(last_error());
        }
        Ok(())
    }

    pub fn start_post_copy(domain: &Domain) -> Result<(), Error> {
        // SAFETY: the domain handle is valid for the borrow.
        let rc = unsafe { sys::virDomainMigrateStartPostCopy(domain.as_ptr(), 0) };
        if rc < 0 {
            return Err(last_error());
        }
        Ok(())
    }
}
