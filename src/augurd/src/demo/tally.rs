//! What the demo measures as it runs: each host's CPU demand against what it offers, per stage.

/// The demo's two stages: learning (automatic moves off) and acting (on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Learning,
    Acting,
}

impl Stage {
    fn index(self) -> usize {
        match self {
            Stage::Learning => 0,
            Stage::Acting => 1,
        }
    }
}

/// One host in one stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overload {
    /// Seconds its VMs' measured CPU demand was above its capacity.
    pub seconds: f64,
    /// Seconds observed.
    pub observed_s: f64,
    /// The highest demand seen, as a share of capacity.
    pub peak_share: f64,
}

#[derive(Debug, Clone)]
pub struct Tally {
    per_host: Vec<[Overload; 2]>,
}

impl Tally {
    pub fn new(hosts: usize) -> Self {
        Self {
            per_host: vec![[Overload::default(); 2]; hosts],
        }
    }

    /// Counts `dt` seconds of host `host` at `demand` vCPUs against `capacity`.
    pub fn observe(&mut self, stage: Stage, host: usize, demand: f64, capacity: f64, dt: f64) {
        let Some(slot) = self.per_host.get_mut(host) else {
            return;
        };
        let o = &mut slot[stage.index()];
        o.observed_s += dt;
        if demand > capacity {
            o.seconds += dt;
        }
        o.peak_share = o.peak_share.max(demand / capacity);
    }

    pub fn get(&self, host: usize, stage: Stage) -> Overload {
        self.per_host
            .get(host)
            .map(|s| s[stage.index()])
            .unwrap_or_default()
    }

    /// Overloaded seconds of every host in a stage.
    pub fn total(&self, stage: Stage) -> f64 {
        self.per_host.iter().map(|s| s[stage.index()].seconds).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_time_above_capacity_counts_as_overload() {
        let mut t = Tally::new(2);
        t.observe(Stage::Learning, 0, 0.6, 0.5, 1.0);
        t.observe(Stage::Learning, 0, 0.5, 0.5, 1.0);
        t.observe(Stage::Acting, 0, 0.2, 0.5, 2.0);
        t.observe(Stage::Learning, 1, 0.1, 1.0, 1.0);
        t.observe(Stage::Learning, 7, 9.0, 1.0, 1.0);
        let a = t.get(0, Stage::Learning);
        assert_eq!((a.seconds, a.observed_s), (1.0, 2.0));
        assert!((a.peak_share - 1.2).abs() < 1e-9);
        assert_eq!(t.get(0, Stage::Acting).seconds, 0.0);
        assert_eq!(t.total(Stage::Learning), 1.0);
        assert_eq!(t.get(7, Stage::Acting), Overload::default());
    }
}
