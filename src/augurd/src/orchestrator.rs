//! The orchestrator loop of one host: sense → profile → forecast → plan → negotiate → migrate →
//! record, with no central controller.
//!
//! Every `plan_every_s` (every 2 s while draining) it asks its peers for their capacity and
//! bookings (authenticated `Ping`), builds the planner's view of the mesh (this host's VMs with
//! their forecasts; each peer as its capacity holding its booked demand), and runs augur-plan.
//! A move the plan proposes from this host is offered to the peers; the best bidder reserves
//! room under a lease; the domain is live-migrated through libvirt to that peer's advertised URI;
//! the lease is committed, or released if anything failed (the VM stays where it was). Every
//! decision and every migration is kept for `augurctl explain` and `augurctl migrations`, and
//! written to the store's events. Paused, or in dry-run, it decides and explains but does not
//! move.

use crate::config::MeshConfig;
use crate::host::Host;
use crate::lock;
use crate::microvm_moves::MoveOutcome;
use augur_admin::{DecisionReply, MigrationRecordReply, PeerReply, PeersReply};
use augur_libvirt::MigrationRequest;
use augur_mesh::{Demand, HorizonDemand, Ledger, MeshKey, Message, Node, Offer, Peer, PeerInfo};
use augur_plan::{plan, Cluster, Host as PlanHost, MoveRecord, Resources, Rules, Vm as PlanVm};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

const MIB: f64 = 1024.0 * 1024.0;
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
const KEEP_RECORDS: usize = 512;
const DRAIN_EVERY: Duration = Duration::from_secs(2);
/// A peer address no one names any more is dropped after this long without an answer.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// A lease covers the predicted migration this many times over, plus `LEASE_SLACK_S`; `lease_s`
/// is its floor.
const LEASE_MARGIN: f64 = 3.0;
const LEASE_SLACK_S: f64 = 10.0;
/// A libvirt move still running after this many times its predicted time (plus the slack, at
/// least a minute, at most an hour) is aborted; the domain stays on its source.
const GIVE_UP_FACTOR: f64 = 5.0;
/// Without a trained model, a VM's upper bound is its current demand with this margin.
const FALLBACK_MARGIN: f64 = 1.25;

fn now_s() -> i64 {
    (crate::host::now_ns() / 1_000_000_000) as i64
}

#[derive(Debug, Clone, Default)]
struct PeerState {
    id: Option<String>,
    last_seen: Option<Instant>,
    capacity: Demand,
    booked: Vec<HorizonDemand>,
    headroom: Vec<HorizonDemand>,
    info: PeerInfo,
    error: Option<String>,
}

impl PeerState {
    fn up(&self) -> bool {
        self.error.is_none() && self.last_seen.is_some()
    }
}

/// One host's mesh member and orchestrator.
#[derive(Debug)]
pub struct Orchestrator {
    pub node: Arc<Node>,
    config: MeshConfig,
    /// The planning horizon, in seconds.
    horizon_s: u32,
    seeds: Vec<SocketAddr>,
    peers: Mutex<BTreeMap<SocketAddr, PeerState>>,
    paused: AtomicBool,
    draining: AtomicBool,
    decisions: Mutex<VecDeque<DecisionReply>>,
    /// Decisions recorded since start, so a reader can tell new ones from old.
    decisions_total: AtomicU64,
    migrations: Mutex<VecDeque<MigrationRecordReply>>,
    history: Mutex<Vec<MoveRecord>>,
    wake: Notify,
    next_offer: AtomicU64,
    /// Set once the listener is bound (for tests that ask for port 0).
    pub listen_addr: Mutex<Option<SocketAddr>>,
    /// The address peers know this host by.
    advertised: Mutex<Option<SocketAddr>>,
    /// Who gossip says is alive.
    pub members: Arc<augur_mesh::Members>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "augur-host".into())
}

fn mem_total_mib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

impl Orchestrator {
    /// The mesh member described by `config` (not yet listening).
    /// `horizon_s` is the planning horizon: the shortest forecast horizon.
    pub fn new(config: &MeshConfig, horizon_s: u32) -> anyhow::Result<Self> {
        let key = MeshKey::load(&config.key_file)?;
        let capacity = Demand {
            cpu: if config.capacity_cpu > 0.0 {
                config.capacity_cpu
            } else {
                std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
            },
            memory_mib: if config.capacity_memory_mib > 0 {
                config.capacity_memory_mib as f64
            } else {
                mem_total_mib()
            },
            disk_bps: 0.0,
            net_bps: 0.0,
        };
        let id = if config.host_id.is_empty() {
            hostname()
        } else {
            config.host_id.clone()
        };
        let node = Node::new(id, key, Ledger::new(capacity, config.limit));
        *node.info.lock().unwrap_or_else(|p| p.into_inner()) = PeerInfo {
            libvirt_uri: (!config.libvirt_uri.is_empty()).then(|| config.libvirt_uri.clone()),
            migrate_host: (!config.migrate_host.is_empty()).then(|| config.migrate_host.clone()),
            draining: false,
            microvm_port: None,
        };
        let seeds = config
            .peers
            .iter()
            .filter_map(|p| {
                std::net::ToSocketAddrs::to_socket_addrs(p.as_str())
                    .ok()?
                    .next()
            })
            .collect();
        Ok(Self {
            node,
            config: config.clone(),
            horizon_s,
            seeds,
            peers: Mutex::new(BTreeMap::new()),
            paused: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            decisions: Mutex::new(VecDeque::new()),
            decisions_total: AtomicU64::new(0),
            migrations: Mutex::new(VecDeque::new()),
            history: Mutex::new(Vec::new()),
            wake: Notify::new(),
            next_offer: AtomicU64::new(1),
            listen_addr: Mutex::new(None),
            advertised: Mutex::new(None),
            members: Arc::new(augur_mesh::Members::default()),
        })
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        info!(
            paused,
            "automatic moves {}",
            if paused { "paused" } else { "resumed" }
        );
    }

    /// Maintenance: take no VMs, move every VM away.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        lock(&self.node.ledger).set_draining(true);
        info!(host = %self.node.id, "draining: moving every VM away, taking none in");
        self.wake.notify_one();
    }

    pub fn undrain(&self) {
        self.draining.store(false, Ordering::Release);
        lock(&self.node.ledger).set_draining(false);
    }

    pub fn peers(&self) -> PeersReply {
        let gossiping: Vec<SocketAddr> = self.members.live().into_iter().map(|m| m.mesh).collect();
        let peers = lock(&self.peers)
            .iter()
            .map(|(addr, p)| {
                let first = |v: &[HorizonDemand]| v.first().map(|h| h.upper).unwrap_or_default();
                PeerReply {
                    id: p.id.clone().unwrap_or_default(),
                    addr: addr.to_string(),
                    up: p.up(),
                    last_seen_s: p.last_seen.map(|t| t.elapsed().as_secs_f64()),
                    draining: p.info.draining,
                    capacity_cpu: p.capacity.cpu,
                    capacity_memory_mib: p.capacity.memory_mib,
                    booked_cpu: first(&p.booked).cpu,
                    booked_memory_mib: first(&p.booked).memory_mib,
                    headroom_cpu: first(&p.headroom).cpu,
                    headroom_memory_mib: first(&p.headroom).memory_mib,
                    libvirt_uri: p.info.libvirt_uri.clone(),
                    error: p.error.clone(),
                    gossip: gossiping.contains(addr),
                }
            })
            .collect();
        PeersReply {
            host_id: self.node.id.clone(),
            listen: lock(&self.listen_addr)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            paused: self.paused.load(Ordering::Acquire),
            draining: self.draining.load(Ordering::Acquire),
            dry_run: self.config.dry_run,
            auth_failures: self.node.auth_failures.load(Ordering::Relaxed)
                + self.members.refused.load(Ordering::Relaxed),
            reservations: lock(&self.node.ledger).reservations(Instant::now()).len(),
            peers,
        }
    }

    pub fn migrations(&self) -> Vec<MigrationRecordReply> {
        lock(&self.migrations).iter().cloned().collect()
    }

    /// The decisions recorded after the first `seen` (of all since start) that are still kept,
    /// and how many have been recorded since start.
    pub fn decisions_after(&self, seen: u64) -> (Vec<DecisionReply>, u64) {
        let d = lock(&self.decisions);
        let total = self.decisions_total.load(Ordering::Acquire);
        let new = usize::try_from(total.saturating_sub(seen)).unwrap_or(usize::MAX);
        let kept = d
            .iter()
            .skip(d.len().saturating_sub(new))
            .cloned()
            .collect();
        (kept, total)
    }

    /// The decisions that named `vm`, oldest first.
    pub fn explain(&self, vm: &str) -> Vec<DecisionReply> {
        lock(&self.decisions)
            .iter()
            .filter(|d| d.vm.as_deref() == Some(vm) || d.considered.iter().any(|c| c == vm))
            .cloned()
            .collect()
    }

    /// Asks every known peer and every seed for its state.
    async fn refresh_peers(&self) {
        let gossiping: Vec<SocketAddr> = self.members.live().into_iter().map(|m| m.mesh).collect();
        let mut addrs: Vec<SocketAddr> = self.seeds.clone();
        addrs.extend(lock(&self.peers).keys().copied());
        addrs.extend(gossiping.iter().copied());
        addrs.sort();
        addrs.dedup();
        let own = [*lock(&self.listen_addr), *lock(&self.advertised)];
        let asks: Vec<_> = addrs
            .into_iter()
            .filter(|a| !own.contains(&Some(*a)))
            .map(|addr| {
                let node = self.node.clone();
                (
                    addr,
                    tokio::spawn(async move {
                        node.request(addr, "", Message::Ping, PEER_TIMEOUT).await
                    }),
                )
            })
            .collect();
        for (addr, ask) in asks {
            let answer = ask.await;
            let mut peers = lock(&self.peers);
            let state = peers.entry(addr).or_default();
            match answer {
                Ok(Ok(reply)) => match reply.msg {
                    Message::Pong {
                        headroom,
                        capacity,
                        booked,
                        info,
                    } if capacity.is_sane() => {
                        state.id = Some(reply.from);
                        state.last_seen = Some(Instant::now());
                        state.capacity = capacity;
                        state.booked = booked;
                        state.headroom = headroom;
                        state.info = info;
                        state.error = None;
                    }
                    other => state.error = Some(format!("unexpected answer to a ping: {other:?}")),
                },
                Ok(Err(e)) => state.error = Some(e.to_string()),
                Err(e) => state.error = Some(format!("ping task failed: {e}")),
            }
        }
        // Forget addresses that neither the config nor gossip names and that have been silent
        // for a while, so dead hosts do not cost every pass a timeout.
        lock(&self.peers).retain(|addr, p| {
            self.seeds.contains(addr)
                || gossiping.contains(addr)
                || p.last_seen.is_some_and(|t| t.elapsed() < FORGET_AFTER)
        });
    }

    fn record_decision(&self, host: &Host, decision: DecisionReply) {
        host.record_event(
            "decision",
            None,
            serde_json::to_value(&decision).unwrap_or_default(),
        );
        let mut d = lock(&self.decisions);
        d.push_back(decision);
        self.decisions_total.fetch_add(1, Ordering::AcqRel);
        while d.len() > KEEP_RECORDS {
            d.pop_front();
        }
    }

    fn record_migration(&self, host: &Host, record: MigrationRecordReply) {
        host.record_event(
            "migration",
            None,
            serde_json::to_value(&record).unwrap_or_default(),
        );
        let mut m = lock(&self.migrations);
        m.push_back(record);
        while m.len() > KEEP_RECORDS {
            m.pop_front();
        }
    }

    /// Reads this host's VMs and their forecasts, and books that forecast in the ledger: what
    /// the host says of itself to peers and what any offer is checked against.
    async fn refresh_own(&self, host: &Arc<Host>) -> Option<LocalView> {
        // Reading windows and forecasts takes the host's locks and the store: not on the runtime.
        let (host, id, draining) = (
            host.clone(),
            self.node.id.clone(),
            self.draining.load(Ordering::Acquire),
        );
        let horizon_s = self.horizon_s;
        let local =
            match tokio::task::spawn_blocking(move || local_view(&host, &id, draining, horizon_s))
                .await
            {
                Ok(view) => view,
                Err(e) => {
                    warn!(error = %e, "the local view could not be read");
                    return None;
                }
            };
        let own = vec![HorizonDemand {
            horizon_s: self.horizon_s,
            mean: to_demand(
                &local
                    .host
                    .vms
                    .iter()
                    .fold(Resources::default(), |a, v| a.add(&v.forecast_mean)),
            ),
            upper: to_demand(&local.host.demand_upper()),
        }];
        let present: Vec<String> = local.host.vms.iter().map(|v| v.id.clone()).collect();
        lock(&self.node.ledger).set_own(own, &present);
        Some(local)
    }

    /// One pass of the loop.
    pub async fn tick(&self, host: &Arc<Host>) {
        self.refresh_peers().await;
        let Some(local) = self.refresh_own(host).await else {
            return;
        };
        let mut hosts = vec![local.host.clone()];
        let peers: Vec<(SocketAddr, PeerState)> = lock(&self.peers)
            .iter()
            .filter(|(_, p)| p.up())
            .map(|(a, p)| (*a, p.clone()))
            .collect();
        for (_, p) in &peers {
            hosts.push(peer_host(p, self.horizon_s));
        }
        let cluster = Cluster {
            hosts,
            now_s: now_s(),
            history: lock(&self.history).clone(),
            migrating: 0,
        };
        let rules = Rules {
            target_share: self.config.limit.min(0.8),
            bound_level: host.config.forecast.level,
            link: host.migration_link().0,
            ..Rules::default()
        };
        let plan = plan(&cluster, &rules);
        let paused = self.paused.load(Ordering::Acquire);
        for decision in plan.decisions.iter().filter(|d| d.host == self.node.id) {
            let chosen = decision.chosen.as_ref();
            self.record_decision(
                host,
                DecisionReply {
                    at_s: cluster.now_s,
                    host: decision.host.clone(),
                    trigger: decision.trigger.clone(),
                    peak_share: decision.peak_share,
                    peak_resource: decision.peak_resource.clone(),
                    overload_risk: decision.overload_risk,
                    vm: chosen.map(|m| m.vm.clone()),
                    target: chosen.map(|m| m.to.clone()),
                    method: chosen.map(|m| m.cost.method.as_str().to_string()),
                    predicted_total_s: chosen.map(|m| m.cost.total_s),
                    predicted_downtime_s: chosen.map(|m| m.cost.downtime_s),
                    source_after: chosen.map(|m| m.source_after),
                    target_after: chosen.map(|m| m.target_after),
                    risk_avoided: chosen.map(|m| m.risk_avoided),
                    considered: local.host.vms.iter().map(|v| v.id.clone()).collect(),
                    rejected: decision
                        .rejected
                        .iter()
                        .map(|r| match &r.target {
                            Some(t) => format!("{} → {t}: {}", r.vm, r.reason),
                            None => format!("{}: {}", r.vm, r.reason),
                        })
                        .collect(),
                    note: decision.note.clone(),
                    inputs: local.inputs.clone(),
                    action: if chosen.is_none() {
                        "none".into()
                    } else if self.config.dry_run {
                        "dry run: not moved".into()
                    } else if paused {
                        "paused: not moved".into()
                    } else {
                        "negotiating".into()
                    },
                },
            );
        }
        if paused || self.config.dry_run {
            return;
        }
        let Some(chosen) = plan.moves.iter().find(|m| m.from == self.node.id) else {
            return;
        };
        let Some(vm) = local.host.vms.iter().find(|v| v.id == chosen.vm) else {
            return;
        };
        self.carry_out(host, vm, chosen, &peers).await;
    }

    async fn carry_out(
        &self,
        host: &Arc<Host>,
        vm: &PlanVm,
        chosen: &augur_plan::Move,
        peers: &[(SocketAddr, PeerState)],
    ) {
        let offer = Offer {
            offer_id: self.next_offer.fetch_add(1, Ordering::Relaxed),
            vm: vm.id.clone(),
            memory_mib: (vm.current.mem / MIB) as u64,
            vcpus: vm.current.cpu.ceil().max(1.0) as u32,
            forecast: vec![HorizonDemand {
                horizon_s: self.horizon_s,
                mean: to_demand(&vm.forecast_mean),
                upper: to_demand(&vm.forecast_upper),
            }],
            migration_s: chosen.cost.total_s,
        };
        // A microVM goes to a peer that runs them; a libvirt domain to one with a libvirt URI.
        let microvm = host.with_vm(&vm.id, |_| ()).is_ok();
        let takes = |info: &PeerInfo| {
            !info.draining
                && if microvm {
                    info.microvm_port.is_some()
                } else {
                    info.libvirt_uri.is_some()
                }
        };
        // The planner's choice first; the others can bid too, and the best bid wins.
        let mut candidates: Vec<Peer> = peers
            .iter()
            .filter(|(_, p)| takes(&p.info))
            .map(|(addr, p)| Peer {
                id: p.id.clone().unwrap_or_default(),
                addr: *addr,
            })
            .collect();
        candidates.sort_by_key(|p| p.id != chosen.to);
        // The lease must outlast the move, or the target may give the room away meanwhile.
        let needed = chosen.cost.total_s * LEASE_MARGIN + LEASE_SLACK_S;
        let lease = Duration::from_secs_f64(needed.clamp(self.config.lease_s as f64, 600.0));
        let started = Instant::now();
        let negotiation =
            augur_mesh::negotiate(&self.node, offer, &candidates, lease, PEER_TIMEOUT).await;
        let negotiation_ms = started.elapsed().as_secs_f64() * 1e3;
        let bids: Vec<String> = negotiation
            .bids
            .iter()
            .map(|(h, b)| format!("{h}: {b}"))
            .chain(
                negotiation
                    .refusals
                    .iter()
                    .map(|(h, r)| format!("{h}: reservation refused: {r}")),
            )
            .collect();
        let mut record = MigrationRecordReply {
            at_s: now_s(),
            vm: vm.id.clone(),
            from: self.node.id.clone(),
            to: None,
            method: chosen.cost.method.as_str().to_string(),
            ok: false,
            error: None,
            negotiation_ms,
            total_ms: None,
            downtime_ms: None,
            bytes: None,
            predicted_total_s: chosen.cost.total_s,
            predicted_downtime_s: chosen.cost.downtime_s,
            bids,
        };
        let Some(grant) = negotiation.grant else {
            record.error = Some("no peer granted a reservation".into());
            warn!(vm = %vm.id, "no peer would take the VM");
            self.record_migration(host, record);
            return;
        };
        record.to = Some(grant.peer.id.clone());
        let info = peers
            .iter()
            .find(|(a, _)| *a == grant.peer.addr)
            .map(|(_, p)| p.info.clone())
            .unwrap_or_default();
        if microvm {
            let outcome = match info.microvm_port {
                Some(port) => {
                    let to = SocketAddr::new(grant.peer.addr.ip(), port);
                    info!(vm = %vm.id, to = %grant.peer.id, %to, lease = grant.lease, "reservation granted: migrating the microVM");
                    let (host, key, name) = (host.clone(), self.node.key().clone(), vm.id.clone());
                    let lease = grant.lease;
                    let params = augur_microvm::MigrationParams {
                        downtime_goal: Duration::from_millis(host.config.libvirt.max_downtime_ms),
                        ..Default::default()
                    };
                    tokio::task::spawn_blocking(move || {
                        crate::microvm_moves::send(&host, &key, &name, to, lease, &params)
                    })
                    .await
                    .unwrap_or_else(|e| MoveOutcome {
                        error: Some(format!("the migration task failed: {e}")),
                        running_on_source: true,
                        ..Default::default()
                    })
                }
                None => MoveOutcome {
                    error: Some(format!("{} takes no microVMs", grant.peer.id)),
                    running_on_source: true,
                    ..Default::default()
                },
            };
            self.finish_move(host, vm, &grant, outcome, record).await;
            return;
        }
        let dest_uri = match info.libvirt_uri.as_deref().map(safe_libvirt_uri) {
            Some(Ok(uri)) => uri,
            other => {
                let why = match other {
                    Some(Err(e)) => e,
                    _ => "it advertises none".to_string(),
                };
                record.error = Some(format!("{}'s libvirt URI refused: {why}", grant.peer.id));
                if let Err(e) = augur_mesh::release(&self.node, &grant, PEER_TIMEOUT).await {
                    warn!(vm = %vm.id, error = %e, "release not acknowledged; the lease will lapse");
                }
                warn!(vm = %vm.id, error = ?record.error, "move refused; the VM stays here");
                self.record_migration(host, record);
                return;
            }
        };
        let request = MigrationRequest {
            dest_uri,
            migrate_uri: info.migrate_host.as_ref().map(|h| format!("tcp://{h}")),
            method: chosen.cost.method,
            dest_xml: None,
            // A move that takes far longer than predicted (the guest dirties faster than it did)
            // is given up, so it does not hold the target's room and a move slot for ever.
            give_up_after: Some(Duration::from_secs_f64(
                (chosen.cost.total_s * GIVE_UP_FACTOR + LEASE_SLACK_S).clamp(60.0, 3600.0),
            )),
        };
        info!(vm = %vm.id, to = %grant.peer.id, lease = grant.lease, "reservation granted: migrating");
        let domain = host
            .with_domains(|d| d.find(&vm.id).map(|_| d.connection()))
            .flatten();
        let name = vm.id.clone();
        let outcome = match domain {
            Some(conn) => self
                .renewing(&grant, async {
                    tokio::task::spawn_blocking(move || conn.migrate(&name, &request)).await
                })
                .await
                .map(|r| MoveOutcome {
                    ok: r.ok,
                    error: r.error,
                    total_ms: r.total_ms,
                    downtime_ms: r.downtime_ms,
                    bytes: r.bytes,
                    running_on_source: r.running_on_source,
                })
                .unwrap_or_else(|e| MoveOutcome {
                    error: Some(format!("the migration task failed: {e}")),
                    running_on_source: true,
                    ..Default::default()
                }),
            None => MoveOutcome {
                error: Some(format!("{} is no longer a domain of this host", vm.id)),
                running_on_source: true,
                ..Default::default()
            },
        };
        host.with_domains(|d| d.refresh_soon());
        self.finish_move(host, vm, &grant, outcome, record).await;
    }

    /// Runs `migration` while renewing `grant` every third of its lease: the target does not see
    /// a libvirt migration, and one that outlasts the lease would otherwise lose its room.
    async fn renewing<T>(
        &self,
        grant: &augur_mesh::Grant,
        migration: impl std::future::Future<Output = T>,
    ) -> T {
        let every = Duration::from_millis(grant.lease_ms / 3).max(Duration::from_secs(1));
        tokio::pin!(migration);
        loop {
            tokio::select! {
                done = &mut migration => return done,
                _ = tokio::time::sleep(every) => {
                    if let Err(error) = augur_mesh::renew(&self.node, grant, PEER_TIMEOUT).await {
                        warn!(lease = grant.lease, to = %grant.peer.id, %error, "lease not renewed");
                    }
                }
            }
        }
    }

    /// Commits the lease if the VM left this host, releases it if not, and records the move.
    async fn finish_move(
        &self,
        host: &Arc<Host>,
        vm: &PlanVm,
        grant: &augur_mesh::Grant,
        outcome: MoveOutcome,
        mut record: MigrationRecordReply,
    ) {
        if outcome.ok {
            host.observe_migration(vm.memory, vm.working_set, vm.dirty_rate, outcome.total_ms);
            record.ok = true;
            record.total_ms = outcome.total_ms;
            record.downtime_ms = outcome.downtime_ms;
            record.bytes = outcome.bytes;
            if let Err(e) = augur_mesh::commit(&self.node, grant, PEER_TIMEOUT).await {
                // The VM runs on the target either way; its lease will lapse there and its
                // own forecast will hold the VM.
                warn!(vm = %vm.id, error = %e, "commit not acknowledged");
            }
            lock(&self.history).push(MoveRecord {
                vm: vm.id.clone(),
                at_s: now_s(),
            });
            info!(vm = %vm.id, to = %grant.peer.id, total_ms = ?outcome.total_ms, downtime_ms = ?outcome.downtime_ms, "moved");
        } else if !outcome.running_on_source {
            // An error, but the VM no longer runs here (libvirt failed after the switch-over,
            // post-copy is finishing, or a microVM waits paused for an unconfirmed start):
            // the reservation stays with the target.
            record.error = outcome.error;
            if let Err(e) = augur_mesh::commit(&self.node, grant, PEER_TIMEOUT).await {
                warn!(vm = %vm.id, error = %e, "commit not acknowledged");
            }
            warn!(vm = %vm.id, error = ?record.error, "migration reported an error, but the VM no longer runs here");
        } else {
            record.error = Some(outcome.error.unwrap_or_else(|| "migration failed".into()));
            if let Err(e) = augur_mesh::release(&self.node, grant, PEER_TIMEOUT).await {
                warn!(vm = %vm.id, error = %e, "release not acknowledged; the lease will lapse");
            }
            warn!(vm = %vm.id, error = ?record.error, "move failed; the VM stays here");
        }
        self.record_migration(host, record);
    }
}

/// A peer's advertised libvirt URI, if it is one augurd will hand to libvirt: QEMU's system
/// instance over TLS, TCP, SSH or a unix socket, with no option but a unix socket's path.
/// libvirt URIs carry transport options (a command to run, certificate checks off), and a peer
/// is not trusted with those.
pub fn safe_libvirt_uri(uri: &str) -> Result<String, String> {
    if uri.len() > 512 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("too long, or it holds control characters or spaces".into());
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| format!("{uri:?} has no scheme"))?;
    if !matches!(scheme, "qemu+tls" | "qemu+tcp" | "qemu+ssh" | "qemu+unix") {
        return Err(format!("transport {scheme:?} is not allowed"));
    }
    let (location, query) = match rest.split_once('?') {
        Some((l, q)) => (l, Some(q)),
        None => (rest, None),
    };
    let (host, path) = location.split_at(location.find('/').unwrap_or(location.len()));
    if path != "/system" {
        return Err(format!("{path:?} is not /system"));
    }
    if host.contains('@') {
        return Err("user names in the URI are not allowed".into());
    }
    match (scheme, query) {
        (_, None) => Ok(uri.to_string()),
        ("qemu+unix", Some(q)) => {
            let socket = q
                .strip_prefix("socket=")
                .filter(|p| p.starts_with('/') && !p.contains('&') && !p.contains(".."))
                .ok_or_else(|| "only socket=/absolute/path is allowed".to_string())?;
            Ok(format!("qemu+unix:///system?socket={socket}"))
        }
        (_, Some(_)) => Err("URI options are not allowed".into()),
    }
}

fn to_demand(r: &Resources) -> Demand {
    Demand {
        cpu: r.cpu,
        memory_mib: r.mem / MIB,
        disk_bps: r.disk,
        net_bps: r.net,
    }
}

fn from_demand(d: &Demand) -> Resources {
    Resources {
        cpu: d.cpu,
        mem: d.memory_mib * MIB,
        disk: d.disk_bps,
        net: d.net_bps,
    }
}

/// A peer as the planner sees it: its capacity holding one pinned load of everything it booked.
fn peer_host(p: &PeerState, horizon_s: u32) -> PlanHost {
    let booked = p.booked.first().copied().unwrap_or(HorizonDemand {
        horizon_s,
        mean: Demand::default(),
        upper: Demand::default(),
    });
    let id = p.id.clone().unwrap_or_default();
    PlanHost {
        id: id.clone(),
        capacity: from_demand(&p.capacity),
        vms: vec![PlanVm {
            id: format!("({id} booked)"),
            current: from_demand(&booked.mean),
            forecast_mean: from_demand(&booked.mean),
            forecast_upper: from_demand(&booked.upper),
            memory: 0.0,
            working_set: 0.0,
            dirty_rate: 0.0,
            pinned: true,
            affinity_group: None,
            anti_affinity_group: None,
        }],
        maintenance: p.info.draining,
        migrating: 0,
        reserved: Resources::default(),
    }
}

struct LocalView {
    host: PlanHost,
    /// What the planner was given, per VM, for explanations.
    inputs: Vec<String>,
}

/// This host's VMs with their forecasts, as the planner sees them.
/// A VM of this host as the planner needs to know it, whatever runs it.
struct LocalVm {
    name: String,
    id: u64,
    memory: f64,
    /// What the first pre-copy round copies: all of memory for QEMU, which reads every page;
    /// the pages ever written for a microVM, whose migration skips the rest.
    to_copy: f64,
    vcpus: u32,
    kind: &'static str,
}

/// The planner's view of one local VM: its current demand, its forecast (the trained model's,
/// else current demand with a margin), memory, working set and dirty rate; and the line that
/// explains those inputs.
fn plan_vm(host: &Arc<Host>, vm: LocalVm, horizon_s: u32) -> (PlanVm, String) {
    let LocalVm {
        name,
        id,
        memory,
        to_copy,
        vcpus,
        kind,
    } = vm;
    let w = host.current_window(id).unwrap_or_default();
    let current = Resources {
        cpu: w.cpu_vcpus.unwrap_or(0.0).min(vcpus as f64),
        mem: memory,
        disk: w.disk_read_bytes_per_s.unwrap_or(0.0) + w.disk_write_bytes_per_s.unwrap_or(0.0),
        net: w.net_rx_bytes_per_s.unwrap_or(0.0) + w.net_tx_bytes_per_s.unwrap_or(0.0),
    };
    let (mean, upper, source) = match forecast(host, &name, current, horizon_s) {
        // A VM uses at most all of its vCPUs, whatever a forecast's bound says.
        Some((mean, upper)) => (
            Resources {
                cpu: mean.cpu.min(vcpus as f64),
                ..mean
            },
            Resources {
                cpu: upper.cpu.min(vcpus as f64),
                ..upper
            },
            "augur-gbt forecast",
        ),
        None => (
            current,
            Resources {
                cpu: (current.cpu * FALLBACK_MARGIN).min(vcpus as f64),
                ..current
            },
            "no forecast at the planning horizon yet: current demand, upper +25%",
        ),
    };
    let dirty = host.latest_dirty_mib_per_s(id).unwrap_or(0.0) * MIB;
    // The guest's own active memory where its shim reports it, else the dirtied working set.
    let working_set = w
        .guest
        .as_ref()
        .and_then(|g| g.active_mib)
        .or(w.working_set_mib)
        .map_or(memory, |m| (m * MIB).min(memory));
    let input = format!(
        "{name} ({kind}): cpu now {:.2}, mean {:.2}, upper {:.2} vCPU ({source}); memory {:.0} MiB, {:.1} MiB to copy; dirty {:.1} MiB/s",
        current.cpu,
        mean.cpu,
        upper.cpu,
        memory / MIB,
        to_copy / MIB,
        dirty / MIB
    );
    let vm = PlanVm {
        id: name,
        current,
        forecast_mean: mean,
        forecast_upper: upper,
        memory: to_copy,
        working_set,
        dirty_rate: dirty,
        pinned: false,
        affinity_group: None,
        anti_affinity_group: None,
    };
    (vm, input)
}

fn local_view(host: &Arc<Host>, id: &str, draining: bool, horizon_s: u32) -> LocalView {
    let domains = host
        .with_domains(|d| {
            d.iter()
                .map(|dom| LocalVm {
                    name: dom.xml.name.clone(),
                    id: dom.id,
                    memory: dom.xml.memory_kib as f64 * 1024.0,
                    to_copy: dom.xml.memory_kib as f64 * 1024.0,
                    vcpus: dom.xml.vcpus,
                    kind: "libvirt domain",
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    // Only running microVMs can move: a finished script, a failed guest or one held paused by
    // an unconfirmed move stays where it is.
    let microvms = host.each_vm(|vm| {
        let spec = vm.spec();
        (vm.state() == augur_microvm::VmState::Running).then(|| LocalVm {
            name: spec.name.clone(),
            id: vm.id(),
            memory: spec.memory_mib as f64 * MIB,
            to_copy: vm.written_bytes() as f64,
            vcpus: spec.vcpus,
            kind: "microVM",
        })
    });
    let (vms, inputs): (Vec<PlanVm>, Vec<String>) = domains
        .into_iter()
        .chain(microvms.into_iter().flatten())
        .map(|vm| plan_vm(host, vm, horizon_s))
        .unzip();
    let capacity = {
        let own = host.orchestrator().map(|o| lock(&o.node.ledger).capacity());
        own.map(|c| from_demand(&c)).unwrap_or_default()
    };
    LocalView {
        host: PlanHost {
            id: id.to_string(),
            capacity,
            vms,
            maintenance: draining,
            migrating: 0,
            reserved: Resources::default(),
        },
        inputs,
    }
}

/// The CPU forecast at the planning horizon from the trained model; the other resources as
/// they are now (memory as allocated).
fn forecast(
    host: &Arc<Host>,
    name: &str,
    current: Resources,
    horizon_s: u32,
) -> Option<(Resources, Resources)> {
    let reply = host.predict(name).ok()?;
    let cpu = reply.resources.iter().find(|r| r.resource == "cpu")?;
    let h = cpu
        .horizons
        .iter()
        .find(|h| h.horizon_s == i64::from(horizon_s))?;
    Some((
        Resources {
            cpu: h.mean.max(0.0),
            ..current
        },
        Resources {
            cpu: h.upper.max(0.0),
            ..current
        },
    ))
}

/// Binds the mesh listener and runs the loop, if the mesh is enabled.
pub async fn start(host: &Arc<Host>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let Some(orchestrator) = host.orchestrator().cloned() else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(&host.config.mesh.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for peers on {}: {e}",
                host.config.mesh.listen
            )
        })?;
    let addr = listener.local_addr()?;
    *lock(&orchestrator.listen_addr) = Some(addr);
    let advertised: SocketAddr = if host.config.mesh.advertise.is_empty() {
        addr
    } else {
        host.config.mesh.advertise.parse()?
    };
    *lock(&orchestrator.advertised) = Some(advertised);
    // Gossip on UDP at the same address and port as negotiation on TCP.
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the gossip socket on udp {addr}: {e}"))?;
    let me = augur_mesh::MemberId {
        host: orchestrator.node.id.clone(),
        gossip: advertised,
        mesh: advertised,
        generation: 0,
    };
    tokio::spawn(augur_mesh::membership::run(
        me,
        orchestrator.node.key().clone(),
        udp,
        orchestrator.seeds.clone(),
        orchestrator.members.clone(),
        stop.clone(),
    ));
    info!(%addr, host = %orchestrator.node.id, peers = orchestrator.seeds.len(), dry_run = orchestrator.config.dry_run, "mesh listening");
    // Peers are answered only once this host's own load is booked: until then its ledger
    // refuses every offer, and a restarted host would otherwise look empty to its peers.
    orchestrator.refresh_own(host).await;
    tokio::spawn(orchestrator.node.clone().serve(listener, stop.clone()));
    if host.runs_microvms() {
        let at = match host.config.mesh.microvm_listen.as_str() {
            // Port 0 (tests) takes any port for both; otherwise the next one up.
            "" => SocketAddr::new(
                addr.ip(),
                if addr.port() == 0 {
                    0
                } else {
                    addr.port().wrapping_add(1)
                },
            ),
            text => text.parse()?,
        };
        let bound = crate::microvm_moves::listen(host, &orchestrator.node, at)
            .map_err(|e| anyhow::anyhow!("cannot listen for microVMs on {at}: {e}"))?;
        lock(&orchestrator.node.info).microvm_port = Some(bound.port());
        info!(%bound, "taking microVMs from peers");
    }
    let host = host.clone();
    tokio::spawn(async move {
        let mut stop = stop;
        loop {
            let every = if orchestrator.draining.load(Ordering::Acquire) {
                DRAIN_EVERY
            } else {
                Duration::from_secs(orchestrator.config.plan_every_s)
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = orchestrator.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            orchestrator.tick(&host).await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::safe_libvirt_uri;

    #[test]
    fn peers_may_advertise_plain_libvirt_uris_only() {
        for ok in [
            "qemu+tls://h2.example/system",
            "qemu+tcp://10.0.0.2/system",
            "qemu+ssh://h2/system",
            "qemu+unix:///system?socket=/var/tmp/lv/2/run/libvirt-sock",
        ] {
            assert_eq!(safe_libvirt_uri(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "qemu+ext:///system?command=/sbin/poweroff",
            "qemu+tls://h2/system?no_verify=1",
            "qemu+ssh://root@h2/system?keyfile=/root/.ssh/id",
            "qemu+unix:///system?socket=/a&command=/bin/sh",
            "qemu+tcp://h2/session",
            "qemu:///system",
            "qemu+tcp://h2/system\u{0}",
            "xen+tcp://h2/system",
        ] {
            assert!(safe_libvirt_uri(bad).is_err(), "{bad} accepted");
        }
    }
}
