//! The pre-copy migration cost model.
//!
//! Round 0 sends all of memory `M` while the guest runs. Each later round sends what was dirtied
//! during the previous one: `V[i+1] = min(W, D · t[i])`, where `D` is the measured dirty rate
//! (bytes/s), `W` the writable working set (pages dirtied at most once per round, however fast),
//! and `t[i] = V[i] / B` the time of round `i` at link bandwidth `B`. When a round's leftover
//! can be sent within the allowed downtime (`V ≤ B · max_downtime`), the guest is paused and the
//! rest sent: that is the downtime. If the leftover stops shrinking (the guest dirties as fast as
//! the link sends) or the round limit is reached first, plain pre-copy does not converge.
//! Auto-converge (vCPU throttling that holds the dirty rate at 80% of the bandwidth; the guest
//! runs slower meanwhile) is named when it converges and plain pre-copy does not, or is quicker;
//! post-copy (switch over at once, then send every page once while the target faults in what the
//! guest touches first) only when not even a 99% throttle brings the dirty rate under the link.
//! Taking the quicker method that converges keeps the predicted time rising with the dirty rate
//! and falling with bandwidth, which [`bandwidth_for`] relies on.

use serde::Serialize;

/// The link a migration uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Link {
    /// Bytes per second available to the migration stream.
    pub bandwidth: f64,
    /// Seconds every move takes whatever it copies: opening the stream, making the target VM,
    /// the hand-over's round trips.
    pub setup_s: f64,
    /// The longest pause the guest may see, in seconds.
    pub max_downtime_s: f64,
    /// Pre-copy rounds before giving up on plain pre-copy.
    pub max_rounds: u32,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            bandwidth: 1.25e9, // 10 Gb/s
            setup_s: 0.0,
            max_downtime_s: 0.3,
            max_rounds: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    PreCopy,
    AutoConverge,
    PostCopy,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::PreCopy => "pre-copy",
            Method::AutoConverge => "auto-converge",
            Method::PostCopy => "post-copy",
        }
    }
}

/// What a migration is predicted to cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MigrationCost {
    pub method: Method,
    /// From start to the guest running on the target.
    pub total_s: f64,
    pub downtime_s: f64,
    pub bytes: f64,
    /// Pre-copy rounds, the first full copy included.
    pub rounds: u32,
}

/// A finished move that copied less than this says more about its fixed costs (making the
/// target VM, the hand-over's round trips) than about the rate bytes go at: calibrating the
/// bandwidth on it would make every larger VM look slow to move, even non-convergent.
pub const MIN_CALIBRATION_BYTES: f64 = 16.0 * 1024.0 * 1024.0;

/// Throttling brings the dirty rate to this share of the bandwidth.
const THROTTLED_SHARE: f64 = 0.8;
/// Auto-converge can slow the guest to this share of its speed at most (QEMU's default
/// maximum throttle is 99%).
const MAX_THROTTLE: f64 = 0.99;

/// Predicts the cost of moving a guest of `memory` bytes with working set `working_set` bytes
/// dirtied at `dirty_rate` bytes/s over `link`. Inputs are clamped to be non-negative; a link
/// without bandwidth gives an infinite cost.
pub fn migration_cost(
    memory: f64,
    working_set: f64,
    dirty_rate: f64,
    link: &Link,
) -> MigrationCost {
    let mut cost = transfer_cost(memory, working_set, dirty_rate, link);
    cost.total_s += link.setup_s.max(0.0);
    cost
}

/// [`migration_cost`] without the link's fixed cost.
fn transfer_cost(memory: f64, working_set: f64, dirty_rate: f64, link: &Link) -> MigrationCost {
    let memory = memory.max(0.0);
    let working_set = working_set.clamp(0.0, memory);
    let dirty_rate = dirty_rate.max(0.0);
    let b = link.bandwidth;
    if b.is_nan() || b <= 0.0 {
        return MigrationCost {
            method: Method::PreCopy,
            total_s: f64::INFINITY,
            downtime_s: f64::INFINITY,
            bytes: memory,
            rounds: 0,
        };
    }
    let stop_at = b * link.max_downtime_s;
    let plain = pre_copy(
        memory,
        working_set,
        dirty_rate,
        b,
        stop_at,
        link.max_rounds.max(1),
    );
    // Throttling the guest (QEMU's auto-converge, up to 99%) holds the dirty rate at
    // THROTTLED_SHARE of the link, if it can get it there, and keeps the rounds going until
    // the rest fits the downtime.
    let throttled = (dirty_rate * (1.0 - MAX_THROTTLE) <= THROTTLED_SHARE * b)
        .then(|| {
            let held = dirty_rate.min(THROTTLED_SHARE * b);
            pre_copy(memory, working_set, held, b, stop_at, MAX_THROTTLED_ROUNDS)
        })
        .flatten();
    // The quicker method that converges, plain pre-copy on a tie (throttling slows the guest).
    // Taking the quicker keeps the cost rising with the dirty rate and falling with bandwidth.
    match (plain, throttled) {
        (Some(p), Some(t)) if t.total_s < p.total_s => MigrationCost {
            method: Method::AutoConverge,
            ..t
        },
        (Some(p), _) => p,
        (None, Some(t)) => MigrationCost {
            method: Method::AutoConverge,
            ..t
        },
        // Faster than throttling can bring under the link: switch over at once and send every
        // page once while the guest runs on the target, faulting in what it touches first.
        (None, None) => MigrationCost {
            method: Method::PostCopy,
            total_s: memory / b,
            downtime_s: 0.0,
            bytes: memory,
            rounds: 0,
        },
    }
}

/// Rounds a throttled migration may take; it shrinks by THROTTLED_SHARE each round, so this is
/// never the limit in practice.
const MAX_THROTTLED_ROUNDS: u32 = 1000;

/// Plain pre-copy at `dirty_rate` over bandwidth `b`: rounds until a leftover fits in `stop_at`
/// bytes (then the pause), or `None` if none does within `max_rounds`.
fn pre_copy(
    memory: f64,
    working_set: f64,
    dirty_rate: f64,
    b: f64,
    stop_at: f64,
    max_rounds: u32,
) -> Option<MigrationCost> {
    let (mut left, mut bytes, mut elapsed) = (memory, 0.0, 0.0);
    for rounds in 1..=max_rounds {
        let t = left / b;
        bytes += left;
        elapsed += t;
        let next = working_set.min(dirty_rate * t);
        if next <= stop_at {
            return Some(MigrationCost {
                method: Method::PreCopy,
                total_s: elapsed + next / b,
                downtime_s: next / b,
                bytes: bytes + next,
                rounds,
            });
        }
        if next >= left {
            return None; // dirtied as fast as sent: never smaller
        }
        left = next;
    }
    None
}

/// A calibrated figure (the bandwidth, the fixed cost) after one more finished move measured
/// `new`: half the weight on the newest move, since links change and one odd move should not
/// rule.
pub fn recalibrated(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |old| 0.5 * old + 0.5 * new)
}

/// The bandwidth under which [`migration_cost`] predicts what a finished move took: `total_s`
/// for `memory`, `working_set` and `dirty_rate` as they were when it began, the rest of `link`
/// as it was. This fits the model's one free input to what the move measured, so the rounds a
/// busy guest needed are not counted as a slower link (as a rate per byte of memory would).
/// `None` when no bandwidth in 100 KB/s–1 TB/s explains it.
pub fn bandwidth_for(
    memory: f64,
    working_set: f64,
    dirty_rate: f64,
    link: &Link,
    total_s: f64,
) -> Option<f64> {
    let time_at = |bandwidth: f64| {
        let link = Link { bandwidth, ..*link };
        migration_cost(memory, working_set, dirty_rate, &link).total_s
    };
    if !(total_s.is_finite() && total_s > 0.0) {
        return None;
    }
    // More bandwidth costs less time, but for a jump where post-copy takes over (a link 80
    // times slower than the dirty rate): of the bandwidths on a log grid whose neighbours
    // bracket the measured time, take the one nearest the link as it was thought to be, then
    // bisect inside it.
    const STEPS: usize = 140; // 1e5..1e12 in steps of 10^0.05
    let grid = |i: usize| 1e5_f64 * 10f64.powf(i as f64 * 0.05);
    let guess = link.bandwidth.clamp(1e5, 1e12).log10();
    let (mut slow, mut fast) = (0..STEPS)
        .map(|i| (grid(i), grid(i + 1)))
        .filter(|&(lo, hi)| time_at(lo) >= total_s && time_at(hi) <= total_s)
        .min_by(|a, b| {
            let off = |(lo, hi): (f64, f64)| ((lo * hi).sqrt().log10() - guess).abs();
            off(*a).total_cmp(&off(*b))
        })?;
    for _ in 0..60 {
        let mid = (slow * fast).sqrt();
        if time_at(mid) > total_s {
            slow = mid;
        } else {
            fast = mid;
        }
    }
    Some((slow * fast).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn the_fitted_bandwidth_predicts_the_move_it_was_fitted_on() {
        let link = Link::default();
        // A busy guest: several rounds. Its time per byte of memory would understate the link.
        let true_link = Link {
            bandwidth: 3e8,
            ..link
        };
        let moved = migration_cost(2.0 * GIB, GIB, 1e8, &true_link);
        assert!(moved.rounds > 1, "{moved:?}");
        let fitted = bandwidth_for(2.0 * GIB, GIB, 1e8, &link, moved.total_s).unwrap();
        assert!((fitted / 3e8 - 1.0).abs() < 1e-6, "{fitted}");
        assert!(2.0 * GIB / moved.total_s < 0.9 * 3e8);
        assert_eq!(bandwidth_for(GIB, 0.0, 0.0, &link, 0.0), None);
        assert_eq!(bandwidth_for(GIB, 0.0, 0.0, &link, f64::NAN), None);
        // Faster than any link in range could have done it.
        assert_eq!(bandwidth_for(GIB, 0.0, 0.0, &link, 1e-9), None);
    }

    #[test]
    fn an_idle_guest_costs_one_copy_of_its_memory() {
        let link = Link::default();
        let c = migration_cost(4.0 * GIB, 0.0, 0.0, &link);
        assert_eq!(c.method, Method::PreCopy);
        assert_eq!(c.rounds, 1);
        assert_eq!(c.bytes, 4.0 * GIB);
        assert!((c.total_s - 4.0 * GIB / link.bandwidth).abs() < 1e-9);
        assert_eq!(c.downtime_s, 0.0);
    }

    #[test]
    fn a_moderate_dirty_rate_converges_in_a_few_rounds_within_the_downtime() {
        let link = Link::default();
        // 4 GiB, 1 GiB working set dirtied at 200 MB/s over 1.25 GB/s.
        let c = migration_cost(4.0 * GIB, GIB, 2e8, &link);
        assert_eq!(c.method, Method::PreCopy);
        assert!((2..=6).contains(&c.rounds), "{c:?}");
        assert!(c.downtime_s <= link.max_downtime_s, "{c:?}");
        assert!(c.bytes > 4.0 * GIB && c.bytes < 6.0 * GIB, "{c:?}");
    }

    #[test]
    fn a_guest_dirtying_faster_than_the_link_is_never_plain_pre_copy() {
        let link = Link {
            bandwidth: 1.25e8, // 1 Gb/s
            ..Link::default()
        };
        let c = migration_cost(8.0 * GIB, 4.0 * GIB, 5e8, &link);
        assert_ne!(c.method, Method::PreCopy, "{c:?}");
        assert!(c.total_s.is_finite() && c.bytes >= 8.0 * GIB, "{c:?}");
        // Faster than throttling can fix: post-copy.
        let c = migration_cost(8.0 * GIB, 4.0 * GIB, 1e12, &link);
        assert_eq!(c.method, Method::PostCopy, "{c:?}");
        assert_eq!(c.downtime_s, 0.0);
    }

    #[test]
    fn more_bandwidth_never_costs_more_time() {
        let mut last = f64::INFINITY;
        for gbit in [1.0, 2.5, 10.0, 25.0, 100.0] {
            let link = Link {
                bandwidth: gbit * 1.25e8,
                ..Link::default()
            };
            let c = migration_cost(16.0 * GIB, 2.0 * GIB, 3e8, &link);
            assert!(c.total_s <= last, "{gbit} Gb/s: {c:?}");
            last = c.total_s;
        }
    }

    #[test]
    fn the_first_move_sets_a_calibration_and_each_later_one_moves_it_halfway() {
        let first = recalibrated(None, 100.0);
        assert_eq!(first, 100.0);
        assert_eq!(recalibrated(Some(first), 200.0), 150.0);
    }

    #[test]
    fn the_fixed_cost_is_paid_once_and_not_in_downtime() {
        let plain = migration_cost(GIB, 0.2 * GIB, 1e8, &Link::default());
        let link = Link {
            setup_s: 0.5,
            ..Link::default()
        };
        let c = migration_cost(GIB, 0.2 * GIB, 1e8, &link);
        assert!((c.total_s - plain.total_s - 0.5).abs() < 1e-9, "{c:?}");
        assert_eq!((c.downtime_s, c.rounds), (plain.downtime_s, plain.rounds));
    }

    #[test]
    fn no_bandwidth_is_an_infinite_cost_not_a_hang() {
        let link = Link {
            bandwidth: 0.0,
            ..Link::default()
        };
        assert!(migration_cost(GIB, GIB, 1e6, &link).total_s.is_infinite());
    }

    #[test]
    fn no_dirty_rate_near_the_link_makes_a_move_quicker() {
        // Dirty rates sweeping through the link's bandwidth, where plain pre-copy gives way to
        // throttling: the predicted time never falls as the guest dirties faster.
        let link = Link {
            bandwidth: 1.05e8,
            ..Link::default()
        };
        let mut last = 0.0;
        for i in 0..400 {
            let dirty = 0.5e8 + i as f64 * 0.25e6;
            let c = migration_cost(16.0 * GIB, 16.0 * GIB, dirty, &link);
            assert!(c.total_s >= last, "{dirty} B/s: {c:?} after {last} s");
            last = c.total_s;
        }
    }

    #[test]
    fn the_fit_finds_the_link_of_a_move_that_needed_throttling() {
        let true_link = Link {
            bandwidth: 1.25e9,
            ..Link::default()
        };
        let moved = migration_cost(8.0 * GIB, 8.0 * GIB, 1.18e9, &true_link);
        let fitted = bandwidth_for(
            8.0 * GIB,
            8.0 * GIB,
            1.18e9,
            &Link::default(),
            moved.total_s,
        )
        .unwrap();
        assert!(
            (fitted / 1.25e9 - 1.0).abs() < 1e-3,
            "{fitted} for {moved:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn time_rises_with_the_dirty_rate_and_falls_with_bandwidth(
            memory in 1e6f64..1e11,
            ws_share in 0.0f64..1.0,
            dirty_share in 0.0f64..50.0,
            more in 1.0f64..1.5,
            bandwidth in 1e6f64..1e10,
        ) {
            // Up to 75 times the link: short of where only post-copy can move the guest.
            let dirty = dirty_share * bandwidth;
            let link = Link { bandwidth, ..Link::default() };
            let ws = memory * ws_share;
            let base = migration_cost(memory, ws, dirty, &link).total_s;
            let dirtier = migration_cost(memory, ws, dirty * more, &link).total_s;
            let faster = Link { bandwidth: bandwidth * more, ..link };
            let quicker = migration_cost(memory, ws, dirty, &faster).total_s;
            proptest::prop_assert!(dirtier >= base * (1.0 - 1e-9), "{base} -> {dirtier}");
            proptest::prop_assert!(quicker <= base * (1.0 + 1e-9), "{base} -> {quicker}");
        }

        #[test]
        fn costs_are_finite_and_at_least_one_copy(
            memory in 0.0f64..1e12,
            ws_share in 0.0f64..1.0,
            dirty in 0.0f64..1e11,
            bandwidth in 1e6f64..1e11,
        ) {
            let link = Link { bandwidth, ..Link::default() };
            let c = migration_cost(memory, memory * ws_share, dirty, &link);
            proptest::prop_assert!(c.total_s.is_finite() && c.total_s >= 0.0);
            proptest::prop_assert!(c.bytes >= memory * (1.0 - 1e-12));
            proptest::prop_assert!(c.downtime_s >= 0.0);
            if c.method == Method::PreCopy {
                proptest::prop_assert!(c.downtime_s <= link.max_downtime_s + 1e-9);
            }
        }
    }
}
