//! Times as the filesystem tools print them: C's `asctime(gmtime(t))`
//! (dumpe2fs, debugfs) from calendar fields computed here, in UTC, so
//! reports, the CLI and the TUI show the same dates on every machine.

/// A Unix time as dumpe2fs prints it (`ctime`, in UTC), or `n/a` for 0.
pub fn ctime(t: u64) -> String {
    if t == 0 {
        return "n/a".into();
    }
    asctime(i64::try_from(t).unwrap_or(i64::MAX))
}

/// A Unix time as C's `asctime(gmtime(t))` prints it, without the
/// newline: `Thu Jan  1 00:00:00 1970`.
pub fn asctime(t: i64) -> String {
    let c = Civil::of(t);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        c.weekday, c.month, c.day, c.hour, c.minute, c.second, c.year
    )
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS` (UTC), as qemu-img prints
/// snapshot dates (qemu uses local time).
pub fn utc_text(t: i64) -> String {
    let c = Civil::of(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month_number, c.day, c.hour, c.minute, c.second
    )
}

/// A UTC time broken into calendar fields.
pub struct Civil {
    pub year: i64,
    pub month: &'static str,
    /// 1 to 12.
    pub month_number: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub weekday: &'static str,
}

impl Civil {
    /// The fields of `t` seconds since 1970 (UTC).
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "t is clamped to ±2^40 first: every term below stays under 2^52"
    )]
    pub fn of(t: i64) -> Civil {
        // Keep the year within four or five digits.
        let t = t.clamp(-(1i64 << 40), 1i64 << 40);
        let days = t.div_euclid(86400);
        let secs = t.rem_euclid(86400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MO: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        Civil {
            year,
            month: usize::try_from(month - 1)
                .ok()
                .and_then(|m| MO.get(m))
                .copied()
                .unwrap_or("?"),
            month_number: month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            weekday: usize::try_from(days.rem_euclid(7))
                .ok()
                .and_then(|d| WD.get(d))
                .copied()
                .unwrap_or("?"),
        }
    }
}
