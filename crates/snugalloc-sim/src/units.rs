//! Units: parsing and printing byte sizes and durations for the command line.
//!
//! Sizes are binary: `4k` is 4096 bytes, `64M` is 64 MiB. Durations take a
//! unit suffix (`ms`, `s`, `m`, `h`); a bare number is seconds.

use std::time::Duration;

/// What `--heap` and other size flags accept, for error messages.
pub const BYTES_ALLOWED: &str = "a byte count like 4096, 4k, 64M or 1G (binary units K, M, G)";

/// What `--duration` accepts, for error messages.
pub const DURATION_ALLOWED: &str =
    "a duration like 500ms, 20s, 10m or 8h (a bare number is seconds)";

/// One MiB, the unit of heap sizes in min-heap searches and plots.
pub const MIB: usize = 1 << 20;

/// Parses a byte size with the core's [`snugalloc::parse_bytes`] (so the
/// simulator and the allocator read sizes the same way: `4096`, `4k`, `64M`,
/// `64MiB`, `1G`, binary units, case-insensitive).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    snugalloc::parse_bytes(text).map_err(|e| match e {
        snugalloc::ParseBytesError::Overflow => format!("'{text}' is too large"),
        _ => format!("'{text}' is not {BYTES_ALLOWED}"),
    })
}

/// Parses a duration such as `500ms`, `20s`, `10m`, `8h` or `20`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(num_end);
    let bad = || format!("'{text}' is not {DURATION_ALLOWED}");
    let value: f64 = num.parse().map_err(|_| bad())?;
    let seconds = match suffix {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 1.0e7 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Bytes as MiB with two decimals.
pub fn mib(bytes: f64) -> f64 {
    bytes / MIB as f64
}

/// A short human form of a byte count: `512 B`, `48 KiB`, `64 MiB`.
pub fn human_bytes(bytes: usize) -> String {
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.2} MiB", mib(bytes as f64))
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("16KiB"), Ok(16 << 10));
        assert!(parse_bytes("64Q").is_err());
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(48 << 10), "48 KiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
