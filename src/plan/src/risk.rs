//! The chance that a host's demand exceeds its capacity at the horizon.
//!
//! A forecast gives a mean and an upper bound at a coverage level; reading the bound as that
//! quantile of a normal distribution gives a spread, and with it the probability of demand above
//! capacity. A move is worth what it lowers the sum of these probabilities over the hosts it
//! touches: the expected number of overloaded hosts.

/// P(Z > x) for a standard normal Z (Abramowitz & Stegun 7.1.26: error below 1.5e-7).
pub fn normal_tail(x: f64) -> f64 {
    if x < 0.0 {
        return 1.0 - normal_tail(-x);
    }
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    0.5 * poly * (-z * z).exp()
}

/// The standard normal quantile of `level` (0.5..1), by bisection on [`normal_tail`].
pub fn quantile_z(level: f64) -> f64 {
    let tail = (1.0 - level).clamp(1e-9, 0.5);
    let (mut lo, mut hi) = (0.0f64, 10.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if normal_tail(mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The chance that demand with this forecast `mean` and `margin` (upper bound minus mean, the
/// bound at quantile `z`) exceeds `capacity`. Without a margin the forecast is taken as exact.
pub fn overload_risk(mean: f64, margin: f64, capacity: f64, z: f64) -> f64 {
    if margin <= 0.0 || z <= 0.0 {
        return if mean > capacity { 1.0 } else { 0.0 };
    }
    normal_tail((capacity - mean) * z / margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_matches_known_values() {
        assert!((normal_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_tail(1.644_853_6) - 0.05).abs() < 1e-6);
        assert!((normal_tail(-1.959_964) - 0.975).abs() < 1e-6);
        assert!((quantile_z(0.95) - 1.644_853_6).abs() < 1e-6);
        assert!((quantile_z(0.99) - 2.326_347_9).abs() < 1e-6);
    }

    #[test]
    fn risk_is_the_coverage_gap_at_the_bound_and_exact_without_a_margin() {
        let z = quantile_z(0.95);
        // Capacity right at the bound: the 5% the bound does not cover.
        assert!((overload_risk(6.0, 2.0, 8.0, z) - 0.05).abs() < 1e-6);
        // At the mean: even odds; far above the bound: none to speak of.
        assert!((overload_risk(8.0, 2.0, 8.0, z) - 0.5).abs() < 1e-7);
        assert!(overload_risk(2.0, 2.0, 8.0, z) < 1e-6);
        assert_eq!(overload_risk(9.0, 0.0, 8.0, z), 1.0);
        assert_eq!(overload_risk(7.0, 0.0, 8.0, z), 0.0);
    }
}
