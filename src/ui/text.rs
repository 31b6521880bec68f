//! Text in terminal cells: how wide a string is on screen (a CJK
//! character or an emoji takes two cells, a combining mark none) and how
//! to cut it to a width with a visible mark, so a column is never cut
//! silently nor pushed out of place by a wide name.
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Cells `s` takes on screen.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` cells, ending in `…` when it was cut.
pub fn fit(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0usize;
    let room = max.saturating_sub(1);
    for c in s.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used.saturating_add(w) > room {
            break;
        }
        used = used.saturating_add(w);
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// `s` cut to `max` cells and padded with spaces to exactly `max`.
pub fn fit_pad(s: &str, max: usize) -> String {
    let mut out = fit(s, max);
    let w = width(&out);
    out.extend(std::iter::repeat_n(' ', max.saturating_sub(w)));
    out
}

/// `s` right-aligned in `max` cells (cut with `…` when longer).
pub fn fit_right(s: &str, max: usize) -> String {
    let cut = fit(s, max);
    let mut out: String = std::iter::repeat_n(' ', max.saturating_sub(width(&cut))).collect();
    out.push_str(&cut);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_count_twice_and_cuts_are_marked() {
        assert_eq!(width("ab"), 2);
        assert_eq!(width("😀x"), 3);
        assert_eq!(width("日本"), 4);
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        // A wide character that would straddle the edge is left out.
        assert_eq!(fit("a日本", 4), "a日…");
        assert_eq!(width(&fit("日本語です", 5)), 5);
        assert_eq!(fit_pad("日", 4), "日  ");
        assert_eq!(fit_right("7", 3), "  7");
        assert_eq!(fit("x", 0), "");
    }
}

/// `s` in lines of at most `max` cells, broken at spaces (a word longer
/// than a line cut with `…`), at most `rows` lines, the last ending in
/// `…` when some did not fit.
pub fn wrap(s: &str, max: usize, rows: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split(' ') {
        let sep = usize::from(!line.is_empty());
        if !line.is_empty() && width(&line).saturating_add(sep).saturating_add(width(word)) > max {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    let cut = lines.len() > rows;
    lines.truncate(rows.max(1));
    let last = lines.len().saturating_sub(1);
    for (i, l) in lines.iter_mut().enumerate() {
        let more = if i == last && cut { "…" } else { "" };
        *l = fit(&format!("{l}{more}"), max);
    }
    lines
}

#[cfg(test)]
mod wrap_tests {
    use super::wrap;

    #[test]
    fn wraps_at_spaces_and_marks_what_does_not_fit() {
        assert_eq!(wrap("a bb ccc", 4, 3), ["a bb", "ccc"]);
        assert_eq!(wrap("a bb ccc dddd", 4, 2), ["a bb", "ccc…"]);
        assert_eq!(wrap("abcdefgh", 4, 2), ["abc…"]);
        assert_eq!(wrap("", 4, 2), Vec::<String>::new());
    }
}
