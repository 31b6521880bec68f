//! Byte counts for people: parsing `64K`, `0x400`, `1GiB`, and printing
//! `1.5 MiB`.

// Sizes from disk are printed here (issue 11): no panic, no wrap.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

/// Parses a byte count: decimal or `0x` hex, with an optional binary suffix
/// (`K`, `M`, `G`, `T`, `P`, optionally followed by `iB` or `B`; `s` for
/// 512-byte sectors).
///
/// # Errors
/// A message naming the bad input.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a byte count (examples: 4096, 0x1000, 64K, 1MiB)");
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (t, 10),
    };
    let split = digits
        .find(|c: char| !c.is_ascii_hexdigit() || (radix == 10 && !c.is_ascii_digit()))
        .unwrap_or(digits.len());
    let (num, suffix) = digits.split_at(split);
    let value = u64::from_str_radix(num, radix).map_err(|_| bad())?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "s" => 9,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(bad()),
    };
    value.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// `part / whole` as a fraction for a gauge or a percentage (0 when
/// `whole` is 0); the one place a count becomes a float.
#[allow(
    clippy::as_conversions,
    reason = "u64 to f64 rounds past 2^53, which a display cannot show anyway"
)]
pub fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Formats a byte count with a binary unit (`512 B`, `64 KiB`, `1.5 GiB`).
pub fn human(bytes: u64) -> String {
    let mut out = String::new();
    human_to(&mut out, bytes);
    out
}

/// [`human`], appended to `out` (per line of long listings: no string
/// of its own, and the common whole counts without the formatter).
pub fn human_to(out: &mut String, bytes: u64) {
    const UNITS: [(&str, u32); 5] = [
        ("KiB", 10),
        ("MiB", 20),
        ("GiB", 30),
        ("TiB", 40),
        ("PiB", 50),
    ];
    // The largest unit the count reaches (bytes below 1 KiB).
    let Some(&(unit, shift)) = UNITS
        .iter()
        .rev()
        .find(|(_, shift)| bytes.checked_shr(*shift).is_some_and(|w| w != 0))
    else {
        push_u64(out, bytes);
        out.push_str(" B");
        return;
    };
    if bytes.trailing_zeros() >= shift {
        push_u64(out, bytes.checked_shr(shift).unwrap_or(0));
    } else {
        use std::fmt::Write as _;
        let size = 1u64.checked_shl(shift).unwrap_or(u64::MAX);
        // Writing to a String cannot fail.
        let _ = write!(out, "{:.1}", fraction(bytes, size));
    }
    out.push(' ');
    out.push_str(unit);
}

/// The decimal digits of `n`, at the end of `buf`: (the buffer, where
/// the digits start).
fn digits(mut n: u64) -> ([u8; 20], usize) {
    // u64::MAX has 20 digits.
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    for slot in buf.iter_mut().rev() {
        // `n % 10` is below 10: the cast and the sum cannot overflow.
        let d = u8::try_from(n.checked_rem(10).unwrap_or(0)).unwrap_or(0);
        *slot = b'0'.saturating_add(d);
        at = at.saturating_sub(1);
        n = n.checked_div(10).unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    (buf, at)
}

/// Appends `n` in decimal to `out` (what `{n}` writes), without the
/// formatter (listings write one or more per line).
pub fn push_u64(out: &mut String, n: u64) {
    let (buf, at) = digits(n);
    out.push_str(std::str::from_utf8(buf.get(at..).unwrap_or_default()).unwrap_or_default());
}

/// Appends `n` in decimal to `out`, right-aligned in `width` columns
/// (what `{n:>width$}` writes).
pub fn push_u64_right(out: &mut String, n: u64, width: usize) {
    let (buf, at) = digits(n);
    let text = buf.get(at..).unwrap_or_default();
    // The padding in one piece (a listing writes several per line).
    const SPACES: &str = "                                ";
    let mut pad = width.saturating_sub(text.len());
    while pad > 0 {
        let n = pad.min(SPACES.len());
        out.push_str(SPACES.get(..n).unwrap_or_default());
        pad = pad.saturating_sub(n);
    }
    out.push_str(std::str::from_utf8(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0x400"), Ok(1024));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2s"), Ok(1024));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999P").is_err());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(65536), "64 KiB");
        assert_eq!(human(1536 * 1024), "1.5 MiB");
        assert_eq!(human(1 << 40), "1 TiB");
        let mut edges = vec![0, 1, 7, 9, 10, 11, 99, 100, 12345, u64::MAX, u64::MAX - 1];
        for p in 1..20u32 {
            let t = 10u64.pow(p);
            edges.extend([t - 1, t, t + 1]);
        }
        for n in edges {
            for width in [0, 1, 7, 8, 20, 25] {
                let (mut a, mut b, mut c) = (String::from("x"), String::new(), String::new());
                push_u64(&mut a, n);
                push_u64_right(&mut b, n, width);
                human_to(&mut c, n);
                assert_eq!(
                    (a, b, c),
                    (format!("x{n}"), format!("{n:>width$}"), human(n))
                );
            }
        }
    }

    /// The checked `human` prints what the unchecked one before it did
    /// (kept here as written), at every unit's edges and the extremes.
    #[test]
    fn formats_sizes_as_before_the_lints() {
        #[allow(clippy::as_conversions)]
        fn before(bytes: u64) -> String {
            const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
            let mut unit = 0;
            let mut whole = bytes;
            while whole >= 1024 && unit < UNITS.len() - 1 {
                whole /= 1024;
                unit += 1;
            }
            if unit == 0 {
                return format!("{bytes} B");
            }
            let exact = bytes % (1u64 << (10 * unit)) == 0;
            if exact {
                format!("{whole} {}", UNITS[unit])
            } else {
                format!(
                    "{:.1} {}",
                    bytes as f64 / (1u64 << (10 * unit)) as f64,
                    UNITS[unit]
                )
            }
        }
        let mut values = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63, 0x1234_5678_9abc];
        for shift in (10..=60).step_by(10) {
            let edge = 1u64 << shift;
            values.extend([
                edge - 1,
                edge,
                edge + 1,
                edge * 3 / 2,
                edge.saturating_mul(1023),
            ]);
        }
        for v in values {
            assert_eq!(human(v), before(v), "{v}");
        }
    }
}
