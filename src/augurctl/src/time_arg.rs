//! Time arguments: unix seconds, "now", or a span back from now ("-90s", "-30m", "-6h", "-7d").

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Nanoseconds since the epoch for `text`, with `now` for relative forms.
pub fn parse(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(span) = text.strip_prefix('-') {
        let (number, unit) = span.split_at(
            span.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(span.len()),
        );
        let n: i64 = number
            .parse()
            .map_err(|_| format!("{text:?}: expected a number before the unit"))?;
        let seconds = match unit {
            "s" | "" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
        };
        return n
            .checked_mul(seconds * 1_000_000_000)
            .map(|span| now - span)
            .ok_or_else(|| format!("{text:?}: too far back"));
    }
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?}: expected unix seconds, \"now\", or -<n>s/m/h/d"))?;
    if !seconds.is_finite() || !(0.0..=1e11).contains(&seconds) {
        return Err(format!("{text:?}: out of range"));
    }
    Ok((seconds * 1e9) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        let now = 1_000_000 * 1_000_000_000;
        assert_eq!(parse("now", now), Ok(now));
        assert_eq!(parse("-90s", now), Ok(now - 90 * 1_000_000_000));
        assert_eq!(parse("-2h", now), Ok(now - 7200 * 1_000_000_000));
        assert_eq!(parse("1700000000", now), Ok(1_700_000_000 * 1_000_000_000));
        assert!(parse("-3w", now).unwrap_err().contains("unit"));
        assert!(parse("yesterday", now).is_err());
        assert!(parse("-99999999999d", now).is_err());
    }
}
