//! The guest's clock: how long the VM has run, here and on the hosts it came from. The pacer's
//! schedule is in this time, so it must continue across a migration. It is an offset plus a
//! local `Instant`, not an `Instant` moved back, because `Instant`s count from this host's boot
//! and a VM may have run longer than this host has been up.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct GuestClock {
    base: Instant,
    before: Duration,
}

impl GuestClock {
    /// A clock at zero now.
    pub fn start() -> Self {
        Self::resumed(Duration::ZERO)
    }

    /// A clock that reads `before` now.
    pub fn resumed(before: Duration) -> Self {
        Self {
            base: Instant::now(),
            before,
        }
    }

    pub fn now(&self) -> Duration {
        self.before.saturating_add(self.base.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_clock_goes_on_from_where_it_was_even_past_this_hosts_uptime() {
        let long = Duration::from_secs(100 * 365 * 86_400);
        let clock = GuestClock::resumed(long);
        assert!(clock.now() >= long);
        assert!(GuestClock::start().now() < Duration::from_secs(1));
    }
}
