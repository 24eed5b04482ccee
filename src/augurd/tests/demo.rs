//! `augurd demo` end to end: three in-process hosts watch `nightly`'s cycles with moves paused,
//! train on them, then move a VM off host-a before host-a's next compute phase overloads it.

use augurd::demo::tally::Stage;
use augurd::demo::{run, DemoOptions};

#[test]
fn the_demo_learns_the_cycles_and_moves_a_vm_before_its_host_saturates() {
    if let Some(reason) = augur_microvm::kvm_unavailable_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let report = run(DemoOptions {
        learn_cycles: 6,
        act_cycles: 1,
    })
    .expect("the demo runs");
    assert!(!report.interrupted);
    assert!(
        report.trained.iter().all(|(_, models, _)| *models == 4),
        "every host trains its four models: {:?}",
        report.trained
    );
    let from_a: Vec<_> = report
        .migrations
        .iter()
        .filter(|m| m.from == "host-a" && m.ok)
        .collect();
    assert!(
        !from_a.is_empty(),
        "host-a moved nothing: {:?}",
        report.migrations
    );
    for m in &from_a {
        println!(
            "moved {} host-a → {}: total {:?} ms, downtime {:?} ms",
            m.vm,
            m.to.as_deref().unwrap_or("-"),
            m.total_ms,
            m.downtime_ms
        );
    }
    // host-a was overloaded in every compute phase while it only watched; once it acts on its
    // forecasts, less of the time.
    let host_a = 0;
    let share = |stage| {
        let o = report.tally.get(host_a, stage);
        o.seconds / o.observed_s
    };
    let (learning, acting) = (share(Stage::Learning), share(Stage::Acting));
    println!(
        "host-a overloaded {learning:.2} of the time while learning, {acting:.2} while acting"
    );
    assert!(
        learning > 0.2,
        "the scenario overloads host-a: {learning:.2}"
    );
    assert!(acting < learning / 2.0, "{acting:.2} vs {learning:.2}");
    if let (Some(at_move), Some(at_end)) = (report.progress_at_move, report.progress_at_end) {
        assert!(
            at_end > at_move,
            "nightly's progress stopped after its move"
        );
    }
}
