//! The pre-copy migration cost model.
//!
//! Round 0 sends all of memory `M` while the guest runs. Each later round sends what was dirtied
//! during the previous one: `V[i+1] = min(W, D · t[i])`, where `D` is the measured dirty rate
//! (bytes/s), `W` the writable working set (pages dirtied at most once per round, however fast),
//! and `t[i] = V[i] / B` the time of round `i` at link bandwidth `B`. When a round's leftover
//! can be sent within the allowed downtime (`V ≤ B · max_downtime`), the guest is paused and the
//! rest sent: that is the downtime. If the leftover stops shrinking (the guest dirties as fast as
//! the link sends) or the round limit is reached first, plain pre-copy does not converge, and the
//! model names the fallback: auto-converge (vCPU throttling until the dirty rate falls below 80%
//! of the bandwidth, the guest runs slower meanwhile) when throttling can get there, else
//! post-copy (switch over at once, fault pages in from the source).

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
    let (mut left, mut bytes, mut elapsed, mut rounds) = (memory, 0.0, 0.0, 0);
    while rounds < link.max_rounds.max(1) {
        let t = left / b;
        bytes += left;
        elapsed += t;
        rounds += 1;
        let next = working_set.min(dirty_rate * t);
        if next <= stop_at {
            return MigrationCost {
                method: Method::PreCopy,
                total_s: elapsed + next / b,
                downtime_s: next / b,
                bytes: bytes + next,
                rounds,
            };
        }
        if next >= left * 0.95 {
            break; // no longer shrinking
        }
        left = next;
    }
    // Not converging: throttle if that can bring the dirty rate under the link, else post-copy.
    let throttled = dirty_rate * (1.0 - MAX_THROTTLE);
    if throttled <= THROTTLED_SHARE * b {
        // With the dirty rate held at THROTTLED_SHARE·B, each round shrinks the leftover by that
        // factor until it fits the downtime.
        let rate = dirty_rate.min(THROTTLED_SHARE * b);
        let mut left = working_set.min(rate * (left / b)).max(stop_at);
        let mut extra_rounds = 0;
        while left > stop_at && extra_rounds < 1000 {
            let t = left / b;
            bytes += left;
            elapsed += t;
            extra_rounds += 1;
            left = working_set.min(rate * t) * THROTTLED_SHARE;
        }
        return MigrationCost {
            method: Method::AutoConverge,
            total_s: elapsed + left / b,
            downtime_s: left / b,
            bytes: bytes + left,
            rounds: rounds + extra_rounds,
        };
    }
    // Post-copy: switch over after the rounds done, then pull the working set.
    MigrationCost {
        method: Method::PostCopy,
        total_s: elapsed + working_set / b,
        downtime_s: 0.0,
        bytes: bytes + working_set,
        rounds,
    }
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
    let (mut slow, mut fast) = (1e5_f64, 1e12_f64);
    if !(total_s.is_finite() && total_s > 0.0) || time_at(fast) > total_s || time_at(slow) < total_s
    {
        return None;
    }
    // More bandwidth never costs more time: bisect on its logarithm.
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

    proptest::proptest! {
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
