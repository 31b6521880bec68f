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
        let (spans, next) = &*kept;
        // Newest first: the files after one mostly lie in the stretches
        // asked for it.
        let (recent, oldest) = spans.split_at((*next).min(spans.len()));
        oldest
            .iter()
            .chain(recent.iter())
            .rev()
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

/// Where two versions of a block differ: `[start, end)` byte ranges in
/// it, in order, apart; empty when they are the same.
pub type Differ = Box<[(u32, u32)]>;

/// Most ranges a [`Differ`] keeps (a block differing in more places is
/// compared again when asked).
pub const DIFFER_KEPT: usize = 16;

/// Where `a` and `b` differ, when in at most [`DIFFER_KEPT`] ranges.
pub fn differ(a: &[u8], b: &[u8]) -> Option<Differ> {
    if a == b {
        return Some(Differ::default());
    }
    if a.len() != b.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut open: Option<u32> = None;
    // Word by word where they agree (most of a block that differs), byte
    // by byte inside a word that differs.
    let mut at = 0u32;
    for (x, y) in a.chunks(WORD).zip(b.chunks(WORD)) {
        if x == y {
            if let Some(start) = open.take() {
                out.push((start, at));
            }
        } else {
            for (j, (p, q)) in (at..).zip(x.iter().zip(y)) {
                match (p != q, open) {
                    (true, None) => open = Some(j),
                    (false, Some(start)) => {
                        out.push((start, j));
                        open = None;
                    }
                    _ => {}
                }
            }
        }
        if out.len() > DIFFER_KEPT {
            return None;
        }
        at = at.checked_add(u32::try_from(x.len()).ok()?)?;
    }
    if let Some(start) = open {
        out.push((start, at));
    }
    (out.len() <= DIFFER_KEPT).then(|| out.into_boxed_slice())
}

/// Bytes [`differ`] compares at once.
const WORD: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differ_gives_the_ranges_where_blocks_differ() {
        assert_eq!(differ(b"abcd", b"abcd").as_deref(), Some(&[][..]));
        assert_eq!(
            differ(b"abcd", b"xbcy").as_deref(),
            Some(&[(0, 1), (3, 4)][..])
        );
        assert_eq!(differ(b"abcd", b"axxd").as_deref(), Some(&[(1, 3)][..]));
        assert_eq!(differ(b"ab", b"abc"), None);
        let (a, b) = (vec![0u8; 64], [1u8, 0].repeat(32));
        assert_eq!(differ(&a, &b), None);
        // Ranges across words, at a block's end, and a block's length
        // that is not a whole number of words.
        let mut a = vec![7u8; 4096];
        let b = a.clone();
        a[30..70].fill(1);
        a[100] = 0;
        a[4095] = 0;
        assert_eq!(
            differ(&a, &b).as_deref(),
            Some(&[(30, 70), (100, 101), (4095, 4096)][..])
        );
        assert_eq!(
            differ(&a[..101], &b[..101]).as_deref(),
            Some(&[(30, 70), (100, 101)][..])
        );
        // Against byte-by-byte comparison, for differences of every
        // count around the limit.
        for n in 0..40u32 {
            let mut c = b.clone();
            for k in 0..n {
                let i = (k as usize * 97 + 13) % 4096;
                c[i] ^= 0x5a;
            }
            let mut want: Vec<(u32, u32)> = Vec::new();
            for i in 0..4096u32 {
                if c[i as usize] != b[i as usize] {
                    match want.last_mut() {
                        Some(last) if last.1 == i => last.1 = i + 1,
                        _ => want.push((i, i + 1)),
                    }
                }
            }
            let want = (want.len() <= DIFFER_KEPT).then(|| want.into_boxed_slice());
            assert_eq!(differ(&c, &b), want, "{n} bytes changed");
        }
    }

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
