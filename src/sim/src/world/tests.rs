use super::*;

const DAY: usize = 288;

/// VMs that idle most of the day and run a steep, daily batch job at a time set by their
/// group: hosts that hold several of one group run hot every day at the same hour.
fn batch_vms(n: usize, days: usize) -> Vec<SimVm> {
    (0..n)
        .map(|i| {
            let start = 100 + (i % 3) * 40;
            // VMs 9..12 are light and never peak.
            let light = i >= 9;
            let cpu: Vec<f64> = (0..days * DAY)
                .map(|t| {
                    let s = t % DAY;
                    let wobble = ((t * 7 + i * 13) % 11) as f64 * 10.0;
                    if !light && (start..start + 30).contains(&s) {
                        2400.0 + wobble
                    } else {
                        400.0 + wobble
                    }
                })
                .collect();
            SimVm {
                id: format!("vm{i}"),
                memory: 4e9,
                mem_used: vec![1e9; cpu.len()],
                cpu,
            }
        })
        .collect()
}

fn config(policy: Policy) -> SimConfig {
    SimConfig {
        hosts: 4,
        // Each group's three VMs share a host that their daily job overloads; host 3 is spare.
        host_capacity: Some(6500.0),
        initial_hosts: Some((0..12).map(|i| if i < 9 { i % 3 } else { 3 }).collect()),
        policy,
        warmup_steps: 4 * DAY,
        retrain_steps: 4 * DAY,
        ..SimConfig::default()
    }
}

#[test]
fn without_a_policy_nothing_moves_and_the_daily_peaks_overload_hosts() {
    let vms = batch_vms(12, 6);
    let r = simulate(&vms, &config(Policy::None)).unwrap();
    assert_eq!(r.migrations, 0);
    assert!(r.overload_host_minutes > 0.0, "{r:?}");
    assert!(r.slatah > 0.0 && r.pdm == 0.0 && r.slav == 0.0, "{r:?}");
    assert_eq!(r.steps, 2 * DAY);
    assert_eq!(r.utilisation.len(), 2 * DAY);
}

#[test]
fn both_policies_relieve_hosts_and_proactive_overloads_less_than_reactive() {
    let vms = batch_vms(12, 6);
    let none = simulate(&vms, &config(Policy::None)).unwrap();
    let reactive = simulate(&vms, &config(Policy::Reactive)).unwrap();
    let proactive = simulate(&vms, &config(Policy::Proactive)).unwrap();
    assert!(reactive.migrations > 0, "{reactive:?}");
    assert!(
        reactive.overload_host_minutes < none.overload_host_minutes,
        "reactive {} vs none {}",
        reactive.overload_host_minutes,
        none.overload_host_minutes
    );
    assert!(
        proactive.overload_host_minutes < reactive.overload_host_minutes,
        "proactive {} vs reactive {}",
        proactive.overload_host_minutes,
        reactive.overload_host_minutes
    );
    assert!(proactive.forecast_mae.is_some_and(f64::is_finite));
    assert!(proactive.bytes_migrated >= proactive.migrations as f64 * 4e9);
}

#[test]
fn the_oracle_plans_on_the_actual_future_and_is_not_outdone_by_the_forecaster() {
    let vms = batch_vms(12, 6);
    let none = simulate(&vms, &config(Policy::None)).unwrap();
    let proactive = simulate(&vms, &config(Policy::Proactive)).unwrap();
    let oracle = simulate(&vms, &config(Policy::Oracle)).unwrap();
    assert_eq!(oracle.policy, "oracle");
    assert!(oracle.migrations > 0, "{oracle:?}");
    assert!(oracle.forecast_mae.is_none());
    assert!(
        oracle.overload_host_minutes < none.overload_host_minutes
            && oracle.overload_host_minutes <= proactive.overload_host_minutes,
        "oracle {} vs none {} and proactive {}",
        oracle.overload_host_minutes,
        none.overload_host_minutes,
        proactive.overload_host_minutes
    );
}

#[test]
fn hourly_replacement_from_the_coming_hour_relieves_the_hosts_and_moves_without_limit() {
    let vms = batch_vms(12, 6);
    let none = simulate(&vms, &config(Policy::None)).unwrap();
    let oracle = simulate(&vms, &config(Policy::ReplaceOracle)).unwrap();
    let history = simulate(&vms, &config(Policy::ReplaceHistory)).unwrap();
    assert_eq!(oracle.policy, "replace-oracle");
    assert_eq!(history.policy, "replace-history");
    assert!(
        oracle.overload_host_minutes < none.overload_host_minutes / 2.0,
        "replace-oracle {} vs none {}",
        oracle.overload_host_minutes,
        none.overload_host_minutes
    );
    assert!(oracle.migrations > 0 && history.migrations > 0);
    // Once an hour, as many at a time as the placement asks for.
    assert!(oracle.moves.iter().all(|m| m.0 % replace::EVERY_STEPS == 0));
}

#[test]
fn placement_is_reproducible_from_the_seed() {
    let vms = batch_vms(12, 1);
    let a = place_first_fit(&vms, 4, 3000.0, 0.7, 7);
    assert_eq!(a, place_first_fit(&vms, 4, 3000.0, 0.7, 7));
    assert_ne!(a, place_first_fit(&vms, 4, 3000.0, 0.7, 8));
    assert!(a.iter().all(|h| *h < 4));
}

#[test]
fn unusable_input_is_an_error_not_a_panic() {
    assert!(simulate(&[], &config(Policy::None)).is_err());
    let short = batch_vms(3, 1);
    assert!(simulate(&short, &config(Policy::Reactive))
        .unwrap_err()
        .contains("warm-up"));
    let mut bad = batch_vms(3, 6);
    bad[1].mem_used.truncate(10);
    assert!(simulate(&bad, &config(Policy::None)).is_err());
    let zero = SimConfig {
        host_capacity: Some(0.0),
        ..config(Policy::None)
    };
    assert!(simulate(&batch_vms(3, 6), &zero).is_err());
}
