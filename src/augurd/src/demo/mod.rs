//! `augurd demo`: the whole story on one machine. Three hosts, each a complete augurd (sampling,
//! store, forecaster, planner, mesh) in this process, meshed over loopback with a fresh key.
//!
//! host-a runs a steady service and `nightly`, a job whose every cycle reads its disk (the
//! behavioural precursor) and then computes; together they overload host-a in each compute
//! phase. First the hosts only watch, with automatic moves paused, for a few cycles; then each
//! host trains its forecasters on what it stored and moves are switched on. The forecaster,
//! having learnt what follows the disk reads, predicts the compute phase and host-a's planner
//! moves a VM to the host whose forecast holds it before host-a saturates. The demo prints the
//! decisions with their explanations and ends with the overload seconds of each stage, the
//! migrations and their downtime.

pub mod cluster;
pub mod tally;

use anyhow::Context;
use augur_admin::{render, MigrationRecordReply};
use augur_microvm::VmSpec;
use cluster::{Cluster, HostPlan};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally::{Stage, Tally};

const NIGHTLY: &str = include_str!("../../../../examples/specs/demo/nightly.toml");

pub const PLANS: [HostPlan; 3] = [
    HostPlan {
        name: "host-a",
        capacity_cpu: 0.5,
        vms: &[
            (
                "steady.toml",
                include_str!("../../../../examples/specs/demo/steady.toml"),
            ),
            ("nightly.toml", NIGHTLY),
        ],
    },
    HostPlan {
        name: "host-b",
        capacity_cpu: 0.5,
        vms: &[(
            "web.toml",
            include_str!("../../../../examples/specs/demo/web.toml"),
        )],
    },
    HostPlan {
        name: "host-c",
        capacity_cpu: 2.0,
        vms: &[(
            "spare.toml",
            include_str!("../../../../examples/specs/demo/spare.toml"),
        )],
    },
];

/// The VM whose cycles the story follows, and its heavy phase.
const WATCHED: &str = "nightly";
const HEAVY_PHASE: &str = "compute";
/// The hosts sample this often; the demo prints a line every `PRINT_EVERY`.
const SAMPLE_MS: u64 = 500;
const PRINT_EVERY: Duration = Duration::from_secs(1);
const MESH_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Cycles of `nightly` watched with moves paused, before the forecasters train.
    pub learn_cycles: u32,
    /// Cycles watched with automatic moves on.
    pub act_cycles: u32,
}

/// A move of the watched VM, as the demo saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveSeen {
    pub from: String,
    pub to: String,
    /// Seconds into the demo the VM was first seen on its new host.
    pub at_s: f64,
    /// The phase it was in when it arrived.
    pub phase: String,
    /// Seconds from its arrival to the start of its next heavy phase, if that came after.
    pub lead_s: Option<f64>,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub hosts: Vec<(&'static str, f64)>,
    pub tally: Tally,
    pub learn_s: f64,
    pub act_s: f64,
    pub migrations: Vec<MigrationRecordReply>,
    pub moves: Vec<MoveSeen>,
    /// The watched VM's progress counter when first seen off its first host, and at the end.
    pub progress_at_move: Option<u64>,
    pub progress_at_end: Option<u64>,
    /// Where the watched VM ended.
    pub watched_on: Option<String>,
    pub trained: Vec<(&'static str, usize, f64)>,
    /// Decisions that found a host hot while moves were paused.
    pub hot_while_paused: u64,
    pub interrupted: bool,
}

/// The watched VM's seconds per cycle: the sum of its phases.
fn cycle_s() -> anyhow::Result<f64> {
    let spec = VmSpec::from_toml(NIGHTLY).context("demo spec nightly.toml")?;
    Ok(spec.phases.iter().map(|p| p.seconds()).sum())
}

/// The watched VM as one host sees it.
struct WatchedNow {
    phase: String,
    progress: u64,
    uptime_s: f64,
    demand: Option<f64>,
}

/// One host at one instant: demand, and the watched VM if it runs there.
struct HostNow {
    demand: f64,
    watched: Option<WatchedNow>,
}

fn host_now(h: &cluster::DemoHost) -> HostNow {
    let vms = h.host.each_vm(|vm| crate::summary::summarize(&h.host, vm));
    HostNow {
        demand: vms
            .iter()
            .filter_map(|v| v.current.as_ref()?.cpu_vcpus)
            .fold(0.0, |a, b| a + b),
        watched: vms.iter().find(|v| v.name == WATCHED).map(|v| WatchedNow {
            phase: v.phase.clone(),
            progress: v.progress,
            uptime_s: v.uptime_s,
            demand: v.current.as_ref().and_then(|w| w.cpu_vcpus),
        }),
    }
}

/// Seconds until the watched VM's next cycle begins, from its own uptime.
fn until_next_cycle(cluster: &Cluster, cycle: f64) -> Option<f64> {
    let uptime = cluster
        .hosts
        .iter()
        .find_map(|h| host_now(h).watched)?
        .uptime_s;
    Some(cycle - uptime % cycle)
}

/// The story's state between printed lines.
struct Story<'a> {
    cluster: &'a Cluster,
    started: Instant,
    tally: Tally,
    decisions_seen: Vec<u64>,
    migrations_seen: Vec<usize>,
    last_note: Vec<Option<String>>,
    hot_while_paused: u64,
    watched_on: Option<String>,
    /// The watched VM's last host (index) and demand: while it moves it is on neither list,
    /// and its demand stays counted where it was.
    watched_last: Option<(usize, f64)>,
    moves: Vec<MoveSeen>,
    progress_at_move: Option<u64>,
    progress_now: Option<u64>,
    last: Instant,
    next_print: Instant,
}

impl<'a> Story<'a> {
    fn new(cluster: &'a Cluster, started: Instant) -> Self {
        let n = cluster.hosts.len();
        Story {
            cluster,
            started,
            tally: Tally::new(n),
            decisions_seen: vec![0; n],
            migrations_seen: vec![0; n],
            last_note: vec![None; n],
            hot_while_paused: 0,
            watched_on: None,
            watched_last: None,
            moves: Vec::new(),
            progress_at_move: None,
            progress_now: None,
            last: Instant::now(),
            next_print: Instant::now() + PRINT_EVERY,
        }
    }

    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Measures every host, prints one line and whatever the planners decided since.
    fn step(&mut self, stage: Stage, out: &mut impl Write) -> std::io::Result<()> {
        let dt = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let t = self.t();
        let mut line = format!("{t:>5.0} s ");
        let mut watched = None;
        let mut now: Vec<HostNow> = self.cluster.hosts.iter().map(host_now).collect();
        for (i, n) in now.iter().enumerate() {
            if let Some(w) = &n.watched {
                if let Some(demand) = w.demand {
                    self.watched_last = Some((i, demand));
                }
            }
        }
        if now.iter().all(|n| n.watched.is_none()) {
            if let Some((i, demand)) = self.watched_last {
                now[i].demand += demand;
            }
        }
        for (i, (h, n)) in self.cluster.hosts.iter().zip(now).enumerate() {
            self.tally.observe(stage, i, n.demand, h.capacity_cpu, dt);
            let over = if n.demand > h.capacity_cpu {
                "OVER"
            } else {
                "    "
            };
            line += &format!("  {} {:.2}/{:.2} {over}", h.name, n.demand, h.capacity_cpu);
            if let Some(w) = n.watched {
                watched = Some((h.name, w.phase, w.progress));
            }
        }
        if let Some((host, phase, progress)) = &watched {
            line += &format!("  {WATCHED} on {host}, {phase}");
            self.note_watched(host, phase, *progress, t);
        } else {
            line += &format!("  {WATCHED} moving");
        }
        writeln!(out, "{line}")?;
        self.print_decisions(stage, out)?;
        self.print_migrations(out)
    }

    fn note_watched(&mut self, host: &str, phase: &str, progress: u64, t: f64) {
        let heavy = phase.contains(HEAVY_PHASE);
        if let Some(last) = self.moves.last_mut() {
            if last.lead_s.is_none() && heavy && !last.phase.contains(HEAVY_PHASE) {
                last.lead_s = Some(t - last.at_s);
            }
        }
        match &self.watched_on {
            Some(on) if on != host => {
                self.moves.push(MoveSeen {
                    from: on.clone(),
                    to: host.to_string(),
                    at_s: t,
                    phase: phase.to_string(),
                    lead_s: None,
                });
                self.progress_at_move.get_or_insert(progress);
            }
            _ => {}
        }
        self.watched_on = Some(host.to_string());
        self.progress_now = Some(progress);
    }

    fn print_decisions(&mut self, stage: Stage, out: &mut impl Write) -> std::io::Result<()> {
        for (i, h) in self.cluster.hosts.iter().enumerate() {
            let Some(o) = h.host.orchestrator() else {
                continue;
            };
            let (new, total) = o.decisions_after(self.decisions_seen[i]);
            self.decisions_seen[i] = total;
            for d in new {
                if stage == Stage::Learning {
                    self.hot_while_paused += 1;
                    continue;
                }
                // The decisions that start a move in full; the rest once per reason.
                if d.action == "negotiating" {
                    self.last_note[i] = None;
                    write!(out, "{}", indent(without_time(&render::explain("", &[d]))))?;
                    continue;
                }
                let why = match (&d.vm, &d.target) {
                    (Some(vm), Some(to)) => format!("would move {vm} → {to}: {}", d.action),
                    _ => format!("moved nothing: {}", d.note.as_deref().unwrap_or("-")),
                };
                if self.last_note[i].as_ref() != Some(&why) {
                    writeln!(
                        out,
                        "        {} hot (peak {} {:.0}%), {why}",
                        h.name,
                        d.peak_resource,
                        d.peak_share * 100.0,
                    )?;
                    self.last_note[i] = Some(why);
                }
            }
        }
        Ok(())
    }

    /// Counts the decisions made so far as seen: those made while paused are not news.
    fn forget_decisions(&mut self) {
        for (i, h) in self.cluster.hosts.iter().enumerate() {
            if let Some(o) = h.host.orchestrator() {
                let (new, total) = o.decisions_after(self.decisions_seen[i]);
                self.hot_while_paused += new.len() as u64;
                self.decisions_seen[i] = total;
            }
        }
    }

    fn print_migrations(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        for (i, h) in self.cluster.hosts.iter().enumerate() {
            let Some(o) = h.host.orchestrator() else {
                continue;
            };
            let all = o.migrations();
            if all.len() > self.migrations_seen[i] {
                write!(
                    out,
                    "{}",
                    indent(&format!(
                        "migration: {}",
                        without_time(&render::migrations(&all[self.migrations_seen[i]..]))
                    ))
                )?;
                self.migrations_seen[i] = all.len();
            }
        }
        Ok(())
    }

    /// Steps once a second until `until`, or an interrupt.
    fn run_until(
        &mut self,
        stage: Stage,
        until: Instant,
        interrupted: &AtomicBool,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        while Instant::now() < until && !interrupted.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
            if Instant::now() >= self.next_print {
                self.next_print += PRINT_EVERY;
                self.step(stage, out)?;
                out.flush()?;
            }
        }
        Ok(())
    }
}

/// A rendering without the unix time it starts with: the demo's lines carry their own.
fn without_time(text: &str) -> &str {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    text[digits..].trim_start_matches([':', ' '])
}

/// Sets a block of text off from the per-second lines.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("        {l}\n")).collect()
}

fn describe(spec: &VmSpec) -> String {
    let phases: Vec<String> = spec
        .phases
        .iter()
        .map(|p| format!("{} {:.0} s", p.name(), p.seconds()))
        .collect();
    format!("{} ({})", spec.name, phases.join(" → "))
}

/// Runs the demo and prints it; returns what it measured.
pub fn run(options: DemoOptions) -> anyhow::Result<DemoReport> {
    if let Some(reason) = augur_microvm::kvm_unavailable_reason() {
        anyhow::bail!("the demo runs microVMs and needs KVM: {reason}");
    }
    if options.learn_cycles < 2 || options.act_cycles < 1 {
        anyhow::bail!("the demo needs at least 2 learning cycles and 1 acting cycle");
    }
    let cycle = cycle_s()?;
    let dir = tempfile::Builder::new()
        .prefix("augur-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let runtime = crate::daemon::runtime()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        runtime.spawn(async move {
            if crate::daemon::shutdown_signal().await.is_ok() {
                interrupted.store(true, Ordering::Release);
            }
        });
    }
    let mut out = std::io::stdout();
    writeln!(
        out,
        "Augur demo: three hosts on this machine, each a whole augurd, meshed over loopback."
    )?;
    let cluster = Cluster::start(&runtime, dir.path(), &PLANS, SAMPLE_MS)?;
    for (plan, h) in PLANS.iter().zip(&cluster.hosts) {
        let vms: Vec<String> = plan
            .vms
            .iter()
            .filter_map(|(_, text)| VmSpec::from_toml(text).ok())
            .map(|s| describe(&s))
            .collect();
        writeln!(
            out,
            "  {}: {:.2} vCPU; {}",
            h.name,
            h.capacity_cpu,
            vms.join(", ")
        )?;
    }
    writeln!(
        out,
        "Each host has an admin socket, e.g.: augurctl --socket {} explain {WATCHED}",
        cluster.hosts[0].socket.display()
    )?;
    let result = story(&cluster, &options, cycle, &interrupted, &mut out);
    cluster.shutdown(&runtime);
    let report = result?;
    print_summary(&report, &mut out)?;
    Ok(report)
}

fn story(
    cluster: &Cluster,
    options: &DemoOptions,
    cycle: f64,
    interrupted: &AtomicBool,
    out: &mut impl Write,
) -> anyhow::Result<DemoReport> {
    let meshing = Instant::now();
    while !cluster.meshed() {
        if meshing.elapsed() > MESH_TIMEOUT || interrupted.load(Ordering::Acquire) {
            anyhow::bail!("the hosts did not all reach each other within {MESH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    writeln!(
        out,
        "Mesh: every host has authenticated its peers ({:.1} s).",
        meshing.elapsed().as_secs_f64()
    )?;
    let started = Instant::now();
    // Learning ends with the watched VM's last learning cycle, by its own clock.
    let cycles_left = options.learn_cycles as f64 - 1.0;
    let learn_end = Instant::now()
        + Duration::from_secs_f64(
            until_next_cycle(cluster, cycle).unwrap_or(cycle) + cycle * cycles_left,
        );
    writeln!(
        out,
        "\nLearning: {} cycles of {WATCHED} ({:.0} s each) with automatic moves paused.\n\
         Each line: every host's measured CPU demand / what it offers (vCPUs), and where {WATCHED} is.",
        options.learn_cycles, cycle
    )?;
    let mut story = Story::new(cluster, started);
    story.run_until(Stage::Learning, learn_end, interrupted, out)?;

    let mut trained = Vec::new();
    if !interrupted.load(Ordering::Acquire) {
        writeln!(
            out,
            "\nTraining each host's forecasters on what it stored (moves still paused):"
        )?;
        out.flush()?;
        trained = train_all(cluster, |until| {
            story.run_until(Stage::Learning, until, interrupted, out)
        })?;
        for (name, models, seconds) in &trained {
            writeln!(
                out,
                "  {name}: {models} of 4 models trained in {seconds:.1} s"
            )?;
        }
        // Moves go on at the start of a cycle, so that every acting cycle is a whole one.
        let next_cycle = Instant::now()
            + Duration::from_secs_f64(until_next_cycle(cluster, cycle).unwrap_or(0.0));
        story.run_until(Stage::Learning, next_cycle, interrupted, out)?;
        story.forget_decisions();
        cluster.set_paused(false);
        writeln!(
            out,
            "\nActing: automatic moves on for {} cycles; each host plans every second on its {} s forecast.",
            options.act_cycles,
            cluster::HORIZONS_S[0]
        )?;
    }
    let learn_s = story.t();
    let act_started = story.t();
    let act_end = Instant::now() + Duration::from_secs_f64(cycle * options.act_cycles as f64);
    story.run_until(Stage::Acting, act_end, interrupted, out)?;
    let act_s = story.t() - act_started;
    let migrations = cluster
        .hosts
        .iter()
        .filter_map(|h| h.host.orchestrator())
        .flat_map(|o| o.migrations())
        .collect();
    Ok(DemoReport {
        hosts: cluster
            .hosts
            .iter()
            .map(|h| (h.name, h.capacity_cpu))
            .collect(),
        tally: story.tally,
        learn_s,
        act_s,
        migrations,
        moves: story.moves,
        progress_at_move: story.progress_at_move,
        progress_at_end: story.progress_now,
        watched_on: story.watched_on,
        trained,
        hot_while_paused: story.hot_while_paused,
        interrupted: interrupted.load(Ordering::Acquire),
    })
}

/// Trains every host's models at once, calling `meanwhile` with a deadline a little ahead
/// until they are done; returns what each host trained and how long it took.
fn train_all(
    cluster: &Cluster,
    mut meanwhile: impl FnMut(Instant) -> std::io::Result<()>,
) -> std::io::Result<Vec<(&'static str, usize, f64)>> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = cluster
            .hosts
            .iter()
            .map(|h| {
                scope.spawn(move || {
                    let t = Instant::now();
                    let models = h.host.train_now();
                    (h.name, models, t.elapsed().as_secs_f64())
                })
            })
            .collect();
        while !runs.iter().all(|r| r.is_finished()) {
            meanwhile(Instant::now() + Duration::from_millis(200))?;
            // Interrupted, `meanwhile` returns at once; training cannot be cut short.
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(runs.into_iter().filter_map(|r| r.join().ok()).collect())
    })
}

fn per_cycle(seconds: f64, observed_s: f64, cycle: f64) -> String {
    if observed_s <= 0.0 {
        return "-".into();
    }
    format!(
        "{seconds:>5.1} s ({:.1} s per cycle)",
        seconds / observed_s * cycle
    )
}

fn print_summary(r: &DemoReport, out: &mut impl Write) -> anyhow::Result<()> {
    let cycle = cycle_s()?;
    writeln!(out, "\nSummary")?;
    if r.interrupted {
        writeln!(out, "  (interrupted)")?;
    }
    writeln!(
        out,
        "  overload: seconds a host's measured CPU demand was above what it offers"
    )?;
    writeln!(
        out,
        "  {:<8} {:<32} {:<32}",
        "",
        format!("learning, moves paused ({:.0} s)", r.learn_s),
        format!("acting, moves on ({:.0} s)", r.act_s)
    )?;
    for (i, (name, _)) in r.hosts.iter().enumerate() {
        let l = r.tally.get(i, Stage::Learning);
        let a = r.tally.get(i, Stage::Acting);
        writeln!(
            out,
            "  {name:<8} {:<32} {:<32}",
            per_cycle(l.seconds, l.observed_s, cycle),
            per_cycle(a.seconds, a.observed_s, cycle)
        )?;
    }
    writeln!(
        out,
        "  while paused, the planners found a host hot {} times and moved nothing",
        r.hot_while_paused
    )?;
    let ok: Vec<&MigrationRecordReply> = r.migrations.iter().filter(|m| m.ok).collect();
    writeln!(
        out,
        "  migrations: {} ({} failed)",
        ok.len(),
        r.migrations.len() - ok.len()
    )?;
    for m in &r.migrations {
        let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("{v} ms"));
        writeln!(
            out,
            "    {} {} → {}: {}, total {}, downtime {}, negotiation {:.1} ms",
            m.vm,
            m.from,
            m.to.as_deref().unwrap_or("-"),
            if m.ok { "ok" } else { "failed" },
            ms(m.total_ms),
            ms(m.downtime_ms),
            m.negotiation_ms
        )?;
    }
    for m in &r.moves {
        let when = match m.lead_s {
            Some(lead) => format!("{lead:.1} s before its {HEAVY_PHASE} phase began"),
            None if m.phase.contains(HEAVY_PHASE) => format!("during its {HEAVY_PHASE} phase"),
            None => format!("before its {HEAVY_PHASE} phase (not reached yet)"),
        };
        writeln!(
            out,
            "  {WATCHED} arrived on {} at {:.0} s in phase {}: {when}",
            m.to, m.at_s, m.phase
        )?;
    }
    if let (Some(before), Some(after)) = (r.progress_at_move, r.progress_at_end) {
        writeln!(
            out,
            "  {WATCHED}'s progress counter: {before} when it arrived, {after} at the end on {}",
            r.watched_on.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}
