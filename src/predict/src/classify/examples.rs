//! Labelled examples for training and testing the classifier, generated from written-down
//! definitions of each class by a small seeded generator.

use super::features::{DAY_S, MIB};
use super::{ClassFeatures, UsageHistory, WorkloadClass};

/// A small seeded generator (xorshift64*, state seeded by splitmix64 so that every seed, 0
/// included, gives a good stream). Kept here so the examples stay the same whatever version of a
/// random-number crate is around.
#[derive(Debug, Clone)]
struct Rng {
    state: u64,
    /// Box–Muller makes normals in pairs; the second waits here.
    spare: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng {
            // xorshift never leaves the all-zero state.
            state: (z ^ (z >> 31)).max(1),
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform over `lo..=hi`; the modulo bias is negligible for the small ranges used here.
    fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Standard normal (Box–Muller: the cosine of a pair first, its sine next call).
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * self.unit()).sin_cos();
        self.spare = Some(r * sin);
        r * cos
    }
}

/// Per-step draws shared by every class: memory change and I/O around a level with 30% relative
/// normal noise, I/O split between disk and network by a fixed share.
#[derive(Debug)]
struct Levels {
    mem: f64,
    io_mibps: f64,
    disk_share: f64,
}

impl Levels {
    fn draw(rng: &mut Rng, mem: (f64, f64), io_mibps: (f64, f64)) -> Levels {
        Levels {
            mem: rng.uniform(mem.0, mem.1),
            io_mibps: rng.uniform(io_mibps.0, io_mibps.1),
            disk_share: rng.unit(),
        }
    }

    fn push(&self, rng: &mut Rng, h: &mut UsageHistory, cpu: f64) {
        h.cpu.push(cpu.clamp(0.0, 1.0));
        h.mem_change
            .push((self.mem * (1.0 + 0.3 * rng.normal())).clamp(0.0, 1.0));
        let io = self.io_mibps * MIB;
        h.disk_bps
            .push((io * self.disk_share * (1.0 + 0.3 * rng.normal())).max(0.0));
        h.net_bps
            .push((io * (1.0 - self.disk_share) * (1.0 + 0.3 * rng.normal())).max(0.0));
    }
}

/// Generates one history of `class`, by the definitions of [`labelled_examples`].
fn generate(class: WorkloadClass, rng: &mut Rng) -> UsageHistory {
    let steps_per_day = (DAY_S as i64 / crate::STEP_S) as usize;
    let n = rng.int(2, 4) as usize * steps_per_day;
    let mut h = UsageHistory {
        step_s: crate::STEP_S,
        cpu: Vec::with_capacity(n),
        mem_change: Vec::with_capacity(n),
        disk_bps: Vec::with_capacity(n),
        net_bps: Vec::with_capacity(n),
    };
    match class {
        WorkloadClass::Idle => {
            let level = rng.uniform(0.002, 0.035);
            let sd = rng.uniform(0.002, 0.01);
            let l = Levels::draw(rng, (0.0, 0.01), (0.0, 0.5));
            for _ in 0..n {
                let cpu = level + sd * rng.normal();
                l.push(rng, &mut h, cpu);
            }
        }
        WorkloadClass::CpuBound | WorkloadClass::MemoryBound | WorkloadClass::IoBound => {
            let (cpu, rel_sd, mem, io) = match class {
                WorkloadClass::CpuBound => ((0.55, 0.95), (0.02, 0.1), (0.0, 0.06), (0.5, 15.0)),
                WorkloadClass::MemoryBound => ((0.2, 0.65), (0.05, 0.2), (0.05, 0.35), (0.5, 6.0)),
                _ => ((0.05, 0.35), (0.1, 0.3), (0.0, 0.06), (7.0, 180.0)),
            };
            let level = rng.uniform(cpu.0, cpu.1);
            let sd = level * rng.uniform(rel_sd.0, rel_sd.1);
            let l = Levels::draw(rng, mem, io);
            for _ in 0..n {
                let cpu = level + sd * rng.normal();
                l.push(rng, &mut h, cpu);
            }
        }
        WorkloadClass::Bursty => {
            let level = rng.uniform(0.01, 0.12);
            let sd = rng.uniform(0.002, 0.01);
            let start_p = rng.uniform(0.01, 0.04);
            let l = Levels::draw(rng, (0.0, 0.03), (0.0, 2.0));
            let (mut left, mut height) = (0, 0.0);
            for _ in 0..n {
                if left == 0 && rng.unit() < start_p {
                    left = rng.int(1, 4);
                    height = rng.uniform(0.5, 1.0);
                }
                let cpu = if left > 0 {
                    left -= 1;
                    height
                } else {
                    level
                } + sd * rng.normal();
                l.push(rng, &mut h, cpu);
            }
        }
        WorkloadClass::Periodic => {
            let mid = rng.uniform(0.15, 0.6);
            let amp = rng.uniform(0.04, 0.35);
            let phase = rng.uniform(0.0, std::f64::consts::TAU);
            let sd = rng.uniform(0.02, 0.08);
            let l = Levels::draw(rng, (0.0, 0.05), (0.5, 8.0));
            for t in 0..n {
                let angle = std::f64::consts::TAU * t as f64 / steps_per_day as f64 + phase;
                let cpu = mid + amp * angle.sin() + sd * rng.normal();
                l.push(rng, &mut h, cpu);
            }
        }
    }
    h
}

/// Labelled examples: `per_class` generated histories of each class (classes in the order of
/// [`WorkloadClass::ALL`]), with their features. The same seed gives the same examples.
///
/// Every history is on a 5-minute grid and lasts 2, 3 or 4 days (uniformly). Its parameters are
/// drawn once per history, uniformly from the ranges below (`U(a, b)`); then, per step `t`:
/// - CPU is the level of the class plus normal noise `sd · N(0, 1)`, clipped to 0..=1;
/// - memory change is `m · (1 + 0.3 N(0, 1))`, clipped to 0..=1;
/// - disk and network are `io · s · (1 + 0.3 N(0, 1))` and `io · (1 - s) · (1 + 0.3 N(0, 1))`
///   (at least 0), `s` being the disk share `U(0, 1)`.
///
/// | class | CPU level | CPU noise `sd` | `m` | `io` (MiB/s) |
/// |---|---|---|---|---|
/// | idle | `U(0.002, 0.035)` | `U(0.002, 0.01)` | `U(0, 0.01)` | `U(0, 0.5)` |
/// | cpu-bound | `U(0.55, 0.95)` | level · `U(0.02, 0.1)` | `U(0, 0.06)` | `U(0.5, 15)` |
/// | memory-bound | `U(0.2, 0.65)` | level · `U(0.05, 0.2)` | `U(0.05, 0.35)` | `U(0.5, 6)` |
/// | io-bound | `U(0.05, 0.35)` | level · `U(0.1, 0.3)` | `U(0, 0.06)` | `U(7, 180)` |
/// | bursty | baseline `U(0.01, 0.12)`, spikes below | `U(0.002, 0.01)` | `U(0, 0.03)` | `U(0, 2)` |
/// | periodic | `mid + amp · sin(2π t / 288 + φ)` | `U(0.02, 0.08)` | `U(0, 0.05)` | `U(0.5, 8)` |
///
/// Bursty: at each step outside a spike, a spike starts with probability `U(0.01, 0.04)` (drawn
/// per history); it lasts 1 to 4 steps (uniformly) at a height `U(0.5, 1)` drawn per spike.
/// Periodic: `mid = U(0.15, 0.6)`, `amp = U(0.04, 0.35)`, `φ = U(0, 2π)`.
///
/// The ranges overlap at their edges (CPU of memory- and cpu-bound, memory change of cpu- and
/// memory-bound, I/O per CPU of cpu- and io-bound, weak cycles drowned in noise), so some
/// examples are genuinely ambiguous and the tree has to place its thresholds between them.
pub fn labelled_examples(seed: u64, per_class: usize) -> Vec<(ClassFeatures, WorkloadClass)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(per_class * WorkloadClass::ALL.len());
    for class in WorkloadClass::ALL {
        for _ in 0..per_class {
            let h = generate(class, &mut rng);
            // The generator only produces finite shares in 0..=1 and equal lengths.
            match ClassFeatures::from_history(&h) {
                Ok(f) => out.push((f, class)),
                Err(e) => unreachable!("a generated {class} history was rejected: {e}"),
            }
        }
    }
    out
}
