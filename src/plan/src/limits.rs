//! The limits every balancing policy obeys, whatever decides the moves: per-VM cool-downs and the
//! hourly migration budget, both read from the record of past moves.

use crate::model::{MoveRecord, Rules};

const DAY_S: i64 = 86_400;

/// Seconds VM `vm` must still wait before it may move again, if any: `cooldown_s` after its last
/// move, doubled for each further move it made in the last day.
pub fn cooldown_left(history: &[MoveRecord], vm: &str, now_s: i64, rules: &Rules) -> Option<i64> {
    let recent: Vec<i64> = history
        .iter()
        .filter(|m| m.vm == vm && now_s - m.at_s < DAY_S)
        .map(|m| m.at_s)
        .collect();
    let last = recent.iter().max()?;
    let exponent = (recent.len() as u32 - 1).min(16);
    let left = last + rules.cooldown_s.saturating_mul(1 << exponent) - now_s;
    (left > 0).then_some(left)
}

/// Moves that count against the hourly budget at `now_s`.
pub fn moves_in_last_hour(history: &[MoveRecord], now_s: i64) -> u32 {
    history.iter().filter(|m| now_s - m.at_s < 3600).count() as u32
}
