//! A picture of a run: each host's CPU utilisation over time, the time above capacity shaded,
//! and each migration as a tick at its time.

use crate::metrics::SimReport;
use std::fmt::Write;

const WIDTH: f64 = 1200.0;
const LANE: f64 = 60.0;
const LEFT: f64 = 70.0;

/// One SVG with a panel per report (e.g. one per policy), hosts as lanes.
pub fn draw(reports: &[&SimReport], step_minutes: f64) -> String {
    let hosts = reports.iter().map(|r| r.hosts).max().unwrap_or(0);
    let panel = LANE * hosts as f64 + 40.0;
    let height = panel * reports.len() as f64 + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"#,
        w = WIDTH + LEFT + 20.0
    );
    for (p, r) in reports.iter().enumerate() {
        let top = 20.0 + p as f64 * panel;
        let steps = r.utilisation.len().max(1);
        let x = |t: usize| LEFT + WIDTH * t as f64 / steps as f64;
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}: {:.0} overloaded host-minutes, {} migrations over {:.1} days</text>"#,
            top - 5.0,
            r.policy,
            r.overload_host_minutes,
            r.migrations,
            steps as f64 * step_minutes / 1440.0
        );
        for h in 0..r.hosts {
            let base = top + LANE * (h as f64 + 1.0);
            let y = |u: f32| base - (u.clamp(0.0, 1.5) as f64 / 1.5) * (LANE - 6.0);
            let _ = writeln!(
                s,
                r##"<text x="4" y="{}">host {h}</text><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#bbb" stroke-dasharray="3,3"/>"##,
                base - LANE / 2.0,
                LEFT + WIDTH,
                y(1.0),
                y(1.0)
            );
            let mut points = String::new();
            for (t, row) in r.utilisation.iter().enumerate() {
                let u = row.get(h).copied().unwrap_or(0.0);
                if u > 1.0 {
                    let _ = write!(
                        s,
                        r##"<rect x="{:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="#f4a3a3"/>"##,
                        x(t),
                        base - LANE + 6.0,
                        (x(t + 1) - x(t)).max(0.5),
                        LANE - 6.0
                    );
                }
                let _ = write!(points, "{:.1},{:.1} ", x(t), y(u));
            }
            let _ = writeln!(
                s,
                r##"<polyline points="{points}" fill="none" stroke="#2b6cb0" stroke-width="0.8"/>"##
            );
        }
        for &(t, from, to) in &r.moves {
            for (host, colour) in [(from, "#c05621"), (to, "#2f855a")] {
                let base = top + LANE * (host as f64 + 1.0);
                let _ = writeln!(
                    s,
                    r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{colour}" stroke-width="1.2"/>"#,
                    x(t),
                    base - LANE + 6.0,
                    base
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_shaded_and_moves_are_drawn() {
        let r = SimReport {
            policy: "reactive".into(),
            hosts: 2,
            utilisation: vec![vec![0.5, 0.5], vec![1.2, 0.4], vec![0.7, 0.8]],
            moves: vec![(1, 0, 1)],
            migrations: 1,
            ..SimReport::default()
        };
        let svg = draw(&[&r], 5.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("#f4a3a3").count(), 1, "one overloaded step");
        assert_eq!(svg.matches("#c05621").count(), 1);
        assert!(svg.contains("reactive: 0 overloaded host-minutes, 1 migrations"));
    }
}
