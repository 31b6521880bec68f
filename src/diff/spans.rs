//! What the chain's block status says about stretches of the volume,
//! asked once per stretch: `blame -R` asks per file, and neighbouring
//! files mostly lie in the same stretch of one layer, so one answer
//! asked a little ahead serves the files after it.
use std::sync::Mutex;

/// Bytes asked ahead of a query.
pub const AHEAD: u64 = 32 << 20;

/// Answers kept (then the oldest is replaced).
const KEPT: usize = 32;

/// One answer: for source `source`, bytes `[start, end)` have `value`.
#[derive(Clone, Copy)]
struct Span {
    source: usize,
    start: u64,
    end: u64,
    value: Option<usize>,
}

/// The last [`KEPT`] answers.
#[derive(Default)]
pub struct Spans(Mutex<(Vec<Span>, usize)>);

impl Spans {
    /// The answer kept for source `source` at offset `at`: its value
    /// and where it ends.
    pub fn get(&self, source: usize, at: u64) -> Option<(Option<usize>, u64)> {
        let kept = self.0.lock().ok()?;
        kept.0
            .iter()
            .find(|s| s.source == source && s.start <= at && at < s.end)
            .map(|s| (s.value, s.end))
    }

    /// Keeps that for source `source`, `[start, end)` has `value`.
    pub fn put(&self, source: usize, start: u64, end: u64, value: Option<usize>) {
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        let span = Span {
            source,
            start,
            end,
            value,
        };
        let (spans, next) = &mut *kept;
        if spans.len() < KEPT {
            spans.push(span);
        } else if let Some(s) = spans.get_mut(*next) {
            *s = span;
        }
        *next = next.saturating_add(1).checked_rem(KEPT).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_inside_a_kept_span_and_forgets_the_oldest() {
        let s = Spans::default();
        s.put(0, 10, 20, Some(1));
        assert_eq!(s.get(0, 10), Some((Some(1), 20)));
        assert_eq!(s.get(0, 19), Some((Some(1), 20)));
        assert_eq!(s.get(0, 20), None);
        assert_eq!(s.get(1, 15), None);
        for i in 0..KEPT {
            let at = 100u64.saturating_mul(u64::try_from(i).unwrap_or(0).saturating_add(1));
            s.put(0, at, at.saturating_add(1), None);
        }
        assert_eq!(s.get(0, 15), None);
        assert_eq!(s.get(0, 100), Some((None, 101)));
    }
}
