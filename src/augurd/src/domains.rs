//! The libvirt domains of this host: discovered from the daemon, sampled every interval through
//! libvirt's bulk stats, their QEMU process's /proc files and perf on its vCPU threads, and the
//! in-guest shim's channel where the domain has one.

use crate::config::LibvirtConfig;
use augur_libvirt::qemu_process::{self, QemuProcess};
use augur_libvirt::{Connection, DomainStats, DomainXml};
use augur_sense::kvm_exit::TracepointSource;
use augur_sense::perf_source::PerfSource;
use augur_sense::proc_source::ProcReader;
use augur_sense::shim_channel::{ShimChannel, ShimStats};
use augur_wire::{FlowReport, Sample, VmId};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What the host lends the domains' sampling: /proc, and tracefs where it is mounted.
#[derive(Debug)]
pub struct HostSources<'a> {
    pub proc_reader: &'a ProcReader,
    pub tracefs: Option<&'a augur_sense::tracefs::Tracefs>,
    pub tracepoint_period: u64,
}

/// The reader of a domain's shim channel, when it has one and shims are read.
fn open_shim(xml: &DomainXml, enabled: bool) -> Option<ShimChannel> {
    match (&xml.shim_socket, enabled) {
        (Some(path), true) => ShimChannel::connect_unix(&xml.name, path.clone())
            .map_err(|e| warn!(domain = %xml.name, error = %e, "shim channel not started"))
            .ok(),
        _ => None,
    }
}

/// A running domain and the sources watching it.
#[derive(Debug)]
pub struct Domain {
    pub id: VmId,
    pub xml: DomainXml,
    pub qemu: Option<QemuProcess>,
    shim: Option<ShimChannel>,
    perf: Option<PerfSource>,
    /// `kvm:kvm_exit` (by reason) and `kvm:kvm_userspace_exit` on the QEMU vCPU threads.
    trace: Option<TracepointSource>,
    /// libvirt's `state.state` at the last sample.
    pub state: Option<u64>,
    pub seen_since: Instant,
    last_dirty_calc: Option<Instant>,
}

impl Domain {
    pub fn state_label(&self) -> &'static str {
        // virDomainState
        match self.state {
            Some(1) => "running",
            Some(2) => "blocked",
            Some(3) => "paused",
            Some(4) => "shutting-down",
            Some(5) => "shut-off",
            Some(6) => "crashed",
            Some(7) => "suspended",
            _ => "unknown",
        }
    }

    pub fn shim_stats(&self) -> Option<ShimStats> {
        self.shim.as_ref().map(ShimChannel::stats)
    }

    pub fn shim_flows(&self) -> Option<FlowReport> {
        self.shim.as_ref().and_then(ShimChannel::flows)
    }
}

/// Every running domain of one libvirt daemon.
#[derive(Debug)]
pub struct Domains {
    conn: Arc<Connection>,
    config: LibvirtConfig,
    perf: bool,
    list: BTreeMap<VmId, Domain>,
    last_refresh: Option<Instant>,
}

impl Domains {
    pub fn open(config: &LibvirtConfig, perf: bool) -> Result<Self, augur_libvirt::Error> {
        let conn = augur_libvirt::open(&config.uri)?;
        Ok(Self {
            conn: Arc::new(conn),
            config: config.clone(),
            perf,
            list: BTreeMap::new(),
            last_refresh: None,
        })
    }

    /// The connection, to use without holding the host's lock (a migration takes long).
    pub fn connection(&self) -> Arc<Connection> {
        self.conn.clone()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Domain> {
        self.list.values()
    }

    pub fn ids(&self) -> impl Iterator<Item = VmId> + '_ {
        self.list.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A domain by id or name.
    pub fn find(&self, key: &str) -> Option<&Domain> {
        let by_id = key.parse::<VmId>().ok().and_then(|id| self.list.get(&id));
        by_id.or_else(|| self.list.values().find(|d| d.xml.name == key))
    }

    /// Forces a refresh at the next sample (after a migration, say).
    pub fn refresh_soon(&mut self) {
        self.last_refresh = None;
    }

    /// Re-reads the running domains when due: new ones get an id from `id_for` (by name) and
    /// are passed to `register`; those gone are dropped with their sources.
    fn refresh(
        &mut self,
        mut id_for: impl FnMut(&str) -> VmId,
        mut register: impl FnMut(VmId, &DomainXml),
    ) {
        let due = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.config.refresh_s));
        if !due {
            return;
        }
        self.last_refresh = Some(Instant::now());
        let running = match self.conn.running_domains() {
            Ok(r) => r,
            Err(error) => {
                warn!(%error, uri = self.conn.uri(), "cannot list libvirt domains");
                return;
            }
        };
        self.list.retain(|_, d| {
            let keep = running
                .iter()
                .any(|x| x.uuid == d.xml.uuid && x.name == d.xml.name);
            if !keep {
                info!(domain = %d.xml.name, "domain gone from this host");
            }
            keep
        });
        for xml in running {
            let known = self.list.values_mut().find(|d| d.xml.uuid == xml.uuid);
            if let Some(domain) = known {
                // A domain restarted between two refreshes has a new QEMU: sources opened on the
                // old one's threads would read dead (or reused) ids.
                let same = domain.qemu.as_ref().is_some_and(|q| {
                    std::fs::read(format!("/proc/{}/cmdline", q.pid))
                        .is_ok_and(|c| qemu_process::cmdline_names_domain(&c, &xml.name))
                });
                if !same {
                    domain.qemu = qemu_process::find(Path::new("/proc"), &xml.name);
                    domain.perf = match (&domain.qemu, self.perf) {
                        (Some(q), true) if !q.vcpu_tids.is_empty() => {
                            Some(PerfSource::open(&q.vcpu_tids))
                        }
                        _ => None,
                    };
                    domain.trace = None;
                    // libvirt names a channel's socket after the domain's id, which changes with
                    // every start: the old channel would wait on a path nothing serves again.
                    if xml.shim_socket != domain.xml.shim_socket {
                        domain.shim = open_shim(&xml, self.config.shim);
                    }
                    domain.xml = xml;
                }
                continue;
            }
            let id = id_for(&xml.name);
            register(id, &xml);
            let shim = open_shim(&xml, self.config.shim);
            let qemu = qemu_process::find(Path::new("/proc"), &xml.name);
            let perf = match (&qemu, self.perf) {
                (Some(q), true) if !q.vcpu_tids.is_empty() => Some(PerfSource::open(&q.vcpu_tids)),
                _ => None,
            };
            info!(domain = %xml.name, id, shim = shim.is_some(), qemu_pid = qemu.as_ref().map(|q| q.pid), "domain found");
            self.list.insert(
                id,
                Domain {
                    id,
                    xml,
                    qemu,
                    shim,
                    perf,
                    trace: None,
                    state: None,
                    seen_since: Instant::now(),
                    last_dirty_calc: None,
                },
            );
        }
    }

    /// Reads every source of every domain; returns the samples, whether any perf source has a
    /// PMU, and whether `kvm:kvm_exit` fired on any vCPU thread.
    pub fn sample(
        &mut self,
        ts: u64,
        sources: &HostSources<'_>,
        id_for: impl FnMut(&str) -> VmId,
        register: impl FnMut(VmId, &DomainXml),
    ) -> (Vec<Sample>, bool, bool) {
        self.refresh(id_for, register);
        let mut samples = Vec::new();
        let mut pmu = false;
        let mut kvm_exit = false;
        let stats: Vec<DomainStats> = match self.conn.all_stats() {
            Ok(s) => s,
            Err(error) => {
                warn!(%error, "libvirt bulk stats failed");
                Vec::new()
            }
        };
        let dirty_every = Duration::from_secs(self.config.dirty_rate_every_s);
        for domain in self.list.values_mut() {
            if let Some(s) = stats.iter().find(|s| s.name == domain.xml.name) {
                domain.state = s.state();
                samples.push(s.to_sample(domain.id, ts));
            }
            if let Some(q) = &domain.qemu {
                samples.push(sources.proc_reader.sample_threads(
                    domain.id,
                    q.pid,
                    &q.vcpu_tids,
                    ts,
                ));
                if domain.trace.is_none() && !q.vcpu_tids.is_empty() {
                    if let Some(tracefs) = sources.tracefs {
                        domain.trace = TracepointSource::open(tracefs, &q.vcpu_tids, sources.tracepoint_period)
                            .map_err(|e| warn!(domain = %domain.xml.name, error = %e, "kvm tracepoints not opened"))
                            .ok();
                    }
                }
            }
            if let Some(trace) = domain.trace.as_mut() {
                samples.push(trace.sample(domain.id, ts));
                kvm_exit |= trace.kvm_exit_fires();
            }
            if let Some(perf) = domain.perf.as_mut() {
                pmu |= perf.pmu_available();
                samples.push(perf.sample(domain.id, ts));
            }
            if let Some(sample) = domain.shim.as_ref().and_then(|c| c.take(domain.id)) {
                samples.push(sample);
            }
            let due = self.config.dirty_rate_every_s > 0
                && domain
                    .last_dirty_calc
                    .is_none_or(|t| t.elapsed() >= dirty_every);
            if due && domain.state == Some(1) {
                domain.last_dirty_calc = Some(Instant::now());
                if let Err(error) = self
                    .conn
                    .start_dirty_rate(&domain.xml.name, self.config.dirty_rate_calc_s as i32)
                {
                    warn!(domain = %domain.xml.name, %error, "dirty-rate measurement not started");
                }
            }
        }
        (samples, pmu, kvm_exit)
    }
}
