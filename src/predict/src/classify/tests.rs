use super::features::MIB;
use super::*;

const DAY: usize = 288;

/// A fixed ripple in -0.5..0.5, so hand-made histories are not perfectly flat.
fn ripple(t: usize) -> f64 {
    ((t * 7919) % 13) as f64 / 12.0 - 0.5
}

fn history(
    days: usize,
    cpu: impl Fn(usize) -> f64,
    mem: f64,
    disk_mibps: f64,
    net_mibps: f64,
) -> UsageHistory {
    let n = days * DAY;
    UsageHistory {
        step_s: 300,
        cpu: (0..n).map(cpu).collect(),
        mem_change: (0..n).map(|t| mem * (1.0 + 0.2 * ripple(t + 3))).collect(),
        disk_bps: (0..n)
            .map(|t| disk_mibps * MIB * (1.0 + 0.2 * ripple(t + 5)))
            .collect(),
        net_bps: (0..n)
            .map(|t| net_mibps * MIB * (1.0 + 0.2 * ripple(t + 7)))
            .collect(),
    }
}

fn clear_cases() -> Vec<(WorkloadClass, UsageHistory)> {
    vec![
        (
            WorkloadClass::Idle,
            history(3, |t| 0.01 + 0.004 * ripple(t), 0.002, 0.05, 0.02),
        ),
        (
            WorkloadClass::CpuBound,
            history(3, |t| 0.85 + 0.06 * ripple(t), 0.01, 1.0, 1.0),
        ),
        (
            WorkloadClass::MemoryBound,
            history(3, |t| 0.4 + 0.04 * ripple(t), 0.2, 1.0, 0.5),
        ),
        (
            WorkloadClass::IoBound,
            history(3, |t| 0.15 + 0.03 * ripple(t), 0.01, 60.0, 30.0),
        ),
        (
            WorkloadClass::Bursty,
            history(
                3,
                |t| {
                    if t % 50 < 2 {
                        0.9
                    } else {
                        0.04 + 0.01 * ripple(t)
                    }
                },
                0.005,
                0.3,
                0.2,
            ),
        ),
        (
            WorkloadClass::Periodic,
            history(
                3,
                |t| {
                    0.35 + 0.25 * (std::f64::consts::TAU * t as f64 / DAY as f64).sin()
                        + 0.03 * ripple(t)
                },
                0.01,
                1.0,
                1.0,
            ),
        ),
    ]
}

fn trained() -> &'static Classifier {
    static TRAINED: std::sync::OnceLock<Classifier> = std::sync::OnceLock::new();
    TRAINED.get_or_init(|| match Classifier::default_trained() {
        Ok(c) => c,
        Err(e) => panic!("default classifier failed to train: {e}"),
    })
}

#[test]
fn held_out_accuracy_is_at_least_90_percent() {
    let classifier = trained();
    let held_out = labelled_examples(DEFAULT_SEED ^ 0xDEAD_BEEF, 100);
    let mut confusion = [[0usize; 6]; 6];
    for (features, class) in &held_out {
        let got = classifier.classify(features).class;
        confusion[class.label()][got.label()] += 1;
    }
    let correct: usize = (0..6).map(|i| confusion[i][i]).sum();
    let accuracy = correct as f64 / held_out.len() as f64;
    println!(
        "held-out accuracy {accuracy:.3} on {} examples",
        held_out.len()
    );
    for (class, row) in WorkloadClass::ALL.iter().zip(&confusion) {
        println!("{:>13} {row:?}", class.as_str());
    }
    assert!(accuracy >= 0.9, "held-out accuracy {accuracy:.3} < 0.9");
}

#[test]
fn the_explained_path_is_the_trees_own_prediction() {
    let classifier = trained();
    let examples = labelled_examples(7, 30);
    let rows: Vec<f64> = examples.iter().flat_map(|(f, _)| f.as_row()).collect();
    let records = match Array2::from_shape_vec((examples.len(), N_FEATURES), rows) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let predicted: Array1<usize> = classifier.tree.predict(&records);
    for ((features, _), label) in examples.iter().zip(predicted.iter()) {
        assert_eq!(
            classifier.classify(features).class,
            WorkloadClass::ALL[*label]
        );
    }
}

#[test]
fn each_class_is_recognised_in_a_clear_case() {
    let classifier = trained();
    for (class, h) in clear_cases() {
        let features = match ClassFeatures::from_history(&h) {
            Ok(f) => f,
            Err(e) => panic!("{class}: {e}"),
        };
        let got = classifier.classify(&features);
        assert_eq!(got.class, class, "{features:?}\n{:#?}", got.explanation);
    }
}

#[test]
fn explanations_name_real_features_and_hold() {
    let classifier = trained();
    for (class, h) in clear_cases() {
        let features = match ClassFeatures::from_history(&h) {
            Ok(f) => f,
            Err(e) => panic!("{class}: {e}"),
        };
        let row = features.as_row();
        let got = classifier.classify(&features);
        assert!(!got.explanation.is_empty(), "{class}: empty explanation");
        assert!(got.explanation.len() <= DEFAULT_MAX_DEPTH);
        for line in &got.explanation {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 4, "{line}");
            let Some(j) = ClassFeatures::NAMES.iter().position(|n| *n == parts[0]) else {
                panic!("{line}: unknown feature");
            };
            assert_eq!(parts[1], number(row[j]), "{line}");
            assert!(parts[2] == "<" || parts[2] == ">=", "{line}");
            assert!(parts[3].parse::<f64>().is_ok(), "{line}");
        }
    }
}

#[test]
fn the_tree_depth_is_bounded() {
    assert!(trained().depth() <= DEFAULT_MAX_DEPTH);
    let examples = labelled_examples(3, 50);
    for max_depth in [1, 2, 3] {
        let classifier = match Classifier::train(&examples, max_depth) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert!(classifier.depth() <= max_depth);
        let deepest = classifier
            .rules()
            .lines()
            .map(|l| (l.len() - l.trim_start().len()) / 2)
            .max();
        assert_eq!(deepest, Some(classifier.depth()));
    }
}

#[test]
fn rules_cover_every_class() {
    let rules = trained().rules();
    println!("{rules}");
    for class in WorkloadClass::ALL {
        assert!(
            rules.contains(&format!("-> {class}\n")),
            "no leaf for {class}"
        );
    }
}

#[test]
fn training_rejects_what_it_cannot_learn_from() {
    assert!(Classifier::train(&[], 3).is_err());
    let mut examples = labelled_examples(1, 5);
    assert!(Classifier::train(&examples, 0).is_err());
    examples[4].0.cpu_cv = f64::NAN;
    let Err(e) = Classifier::train(&examples, 3) else {
        panic!("NaN feature accepted");
    };
    assert!(e.contains("example 4") && e.contains("cpu_cv"), "{e}");
}

#[test]
fn from_history_rejects_bad_input_clearly() {
    let good = history(1, |_| 0.5, 0.01, 1.0, 1.0);
    assert!(ClassFeatures::from_history(&good).is_ok());
    let cases: Vec<(UsageHistory, &str)> = vec![
        (
            UsageHistory {
                cpu: vec![],
                mem_change: vec![],
                disk_bps: vec![],
                net_bps: vec![],
                ..good.clone()
            },
            "cpu history is empty",
        ),
        (
            UsageHistory {
                step_s: 0,
                ..good.clone()
            },
            "step length must be positive",
        ),
        (
            UsageHistory {
                cpu: {
                    let mut c = good.cpu.clone();
                    c[10] = f64::NAN;
                    c
                },
                ..good.clone()
            },
            "cpu[10] is NaN",
        ),
        (
            UsageHistory {
                disk_bps: {
                    let mut d = good.disk_bps.clone();
                    d[3] = -1.0;
                    d
                },
                ..good.clone()
            },
            "disk_bps[3] is -1",
        ),
        (
            UsageHistory {
                mem_change: vec![0.1; 5],
                ..good.clone()
            },
            "mem_change has 5 steps but cpu has 288",
        ),
        (
            UsageHistory {
                cpu: vec![1.5; DAY],
                ..good.clone()
            },
            "between 0 and 1",
        ),
    ];
    for (h, expected) in cases {
        match ClassFeatures::from_history(&h) {
            Ok(f) => panic!("accepted, expected {expected:?}: {f:?}"),
            Err(e) => assert!(e.contains(expected), "{e:?} lacks {expected:?}"),
        }
    }
}

#[test]
fn features_follow_their_definitions() {
    let sine = |t: usize| 0.5 + 0.3 * (std::f64::consts::TAU * t as f64 / DAY as f64).sin();
    let Ok(f) = ClassFeatures::from_history(&history(2, sine, 0.1, 3.0, 1.0)) else {
        panic!("rejected");
    };
    assert!(f.daily_autocorr > 0.999, "{f:?}");
    assert!((f.cpu_mean - 0.5).abs() < 1e-9);
    assert!((f.mem_dirty_share - 0.1).abs() < 0.01);
    assert!((f.io_mibps_per_cpu - 4.0 / 0.5).abs() < 0.1, "{f:?}");

    let Ok(short) = ClassFeatures::from_history(&history(1, sine, 0.1, 3.0, 1.0)) else {
        panic!("rejected");
    };
    assert_eq!(short.daily_autocorr, 0.0, "under two days");

    let cpu_only = UsageHistory {
        step_s: 300,
        cpu: vec![0.0; 10],
        mem_change: vec![],
        disk_bps: vec![],
        net_bps: vec![],
    };
    let Ok(zero) = ClassFeatures::from_history(&cpu_only) else {
        panic!("rejected");
    };
    assert_eq!(
        zero.as_row(),
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        "zero CPU and nothing else measured"
    );

    let steps = UsageHistory {
        cpu: (1..=100).map(|i| i as f64 / 100.0).collect(),
        ..cpu_only
    };
    let Ok(ranked) = ClassFeatures::from_history(&steps) else {
        panic!("rejected");
    };
    assert_eq!(ranked.cpu_p95, 0.95, "nearest rank");
    assert!((ranked.peak_to_mean - 0.99 / 0.505).abs() < 1e-12);
}

#[test]
fn examples_are_reproducible_and_balanced() {
    let a = labelled_examples(11, 4);
    assert_eq!(a, labelled_examples(11, 4));
    assert_ne!(a, labelled_examples(12, 4));
    for class in WorkloadClass::ALL {
        assert_eq!(a.iter().filter(|(_, c)| *c == class).count(), 4);
    }
}

#[test]
fn class_names_are_kebab_case_everywhere() {
    for class in WorkloadClass::ALL {
        assert_eq!(WorkloadClass::ALL[class.label()], class, "labels index ALL");
        let json = serde_json::to_string(&class).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", class.as_str()));
        assert_eq!(class.to_string(), class.as_str());
        let back: Result<WorkloadClass, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(class));
    }
    assert_eq!(WorkloadClass::CpuBound.as_str(), "cpu-bound");
}
