//! Reference re-placements: every hour every VM is placed afresh, with no limit on moves, from
//! its demand over a window: the last 8 hours (`replace-history`: all that history can say about
//! which VMs peak together) or the coming hour as it will be (`replace-oracle`). No cluster could
//! run either (they move hundreds of VMs an hour); they bound what a placement made from
//! history, and one made with perfect foresight, can do on a trace.

/// Steps between two re-placements (an hour at 5-minute steps).
pub const EVERY_STEPS: usize = 12;
/// What moving a VM is charged in the choice of its host, as a share of capacity added to the
/// host's peak: a move costs CPU on both hosts, so a VM stays where it is unless elsewhere is
/// clearly better.
const MOVE_PENALTY: f64 = 0.05;
/// The history `replace-history` places from (8 hours at 5-minute steps).
pub const HISTORY_STEPS: usize = 96;

/// A host of each VM, chosen greedily from `window[v]`, VM `v`'s demand at each step of the
/// window (all the same length): the VMs most restless over the window first, each to the host
/// where it adds the fewest overloaded steps, then where the host's peak stays lowest. A host
/// takes VMs while their mean demand over the window stays within `fill` of `capacity`; a VM
/// that fits nowhere goes to the host with the least.
pub fn placement(
    window: &[&[f64]],
    current: &[usize],
    hosts: usize,
    capacity: f64,
    fill: f64,
) -> Vec<usize> {
    let steps = window.first().map_or(0, |w| w.len());
    let mean = |w: &[f64]| w.iter().sum::<f64>() / w.len().max(1) as f64;
    let spread = |w: &[f64]| {
        let m = mean(w);
        w.iter().map(|x| (x - m) * (x - m)).sum::<f64>()
    };
    let spreads: Vec<f64> = window.iter().map(|w| spread(w)).collect();
    let mut order: Vec<usize> = (0..window.len()).collect();
    order.sort_by(|a, b| spreads[*b].total_cmp(&spreads[*a]));
    let mut demand = vec![vec![0.0; steps]; hosts];
    let mut load = vec![0.0; hosts];
    let mut host_of = vec![0; window.len()];
    for v in order {
        let w = window[v];
        let m = mean(w);
        let best = (0..hosts)
            .filter(|&h| load[h] + m <= fill * capacity)
            .map(|h| {
                let (mut added, mut peak) = (0usize, 0.0f64);
                for (d, x) in demand[h].iter().zip(w) {
                    added += usize::from(d + x > capacity && *d <= capacity);
                    peak = peak.max(d + x);
                }
                let moved = if h == current[v] {
                    0.0
                } else {
                    MOVE_PENALTY * capacity
                };
                (h, added, peak + moved)
            })
            .min_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)))
            .map(|(h, ..)| h);
        let h = best.unwrap_or_else(|| {
            (0..hosts)
                .min_by(|a, b| load[*a].total_cmp(&load[*b]))
                .unwrap_or(0)
        });
        for (d, x) in demand[h].iter_mut().zip(w) {
            *d += x;
        }
        load[h] += m;
        host_of[v] = h;
    }
    host_of
}

/// The moves from `host_of` to a fresh placement from `window`.
pub fn moves(
    host_of: &[usize],
    window: &[&[f64]],
    hosts: usize,
    capacity: f64,
    fill: f64,
) -> Vec<(usize, usize)> {
    placement(window, host_of, hosts, capacity, fill)
        .into_iter()
        .enumerate()
        .filter(|&(v, to)| host_of[v] != to)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vms_that_peak_together_are_parted() {
        // Two pairs: each pair peaks at its own step; two hosts of 10 fit one pair at a time
        // only if its VMs peak apart.
        let a = [1.0, 8.0, 1.0, 1.0];
        let b = [1.0, 8.0, 1.0, 1.0];
        let c = [1.0, 1.0, 8.0, 1.0];
        let d = [1.0, 1.0, 8.0, 1.0];
        let window: Vec<&[f64]> = vec![&a, &b, &c, &d];
        let host_of = placement(&window, &[0, 0, 0, 0], 2, 10.0, 1.0);
        assert_ne!(host_of[0], host_of[1], "{host_of:?}");
        assert_ne!(host_of[2], host_of[3], "{host_of:?}");
        assert!(moves(&host_of, &window, 2, 10.0, 1.0).is_empty());
        assert_eq!(moves(&[0, 0, 1, 1], &window, 2, 10.0, 1.0).len(), 2);
    }
}
