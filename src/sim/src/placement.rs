//! Initial placement: VMs in a seeded random order, each on the first host where the mean
//! demands placed so far stay within the fill target; VMs that fit nowhere go to the host with
//! the lowest mean demand.

use crate::world::SimVm;

/// A small seeded generator (xorshift64*), so placements are reproducible from the seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

/// The host index of each VM.
pub fn place_first_fit(
    vms: &[SimVm],
    hosts: usize,
    capacity: f64,
    fill: f64,
    seed: u64,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..vms.len()).collect();
    let mut rng = Rng::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut load = vec![0.0; hosts.max(1)];
    let mut host_of = vec![0; vms.len()];
    for v in order {
        let mean = vms[v].mean_cpu();
        let slot = (0..load.len())
            .find(|&h| load[h] + mean <= fill * capacity)
            .unwrap_or_else(|| {
                (0..load.len())
                    .min_by(|a, b| load[*a].total_cmp(&load[*b]))
                    .unwrap_or(0)
            });
        load[slot] += mean;
        host_of[v] = slot;
    }
    host_of
}
