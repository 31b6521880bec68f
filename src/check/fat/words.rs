//! A word per cluster (the FAT as fixed in memory, the owner of each
//! cluster), held in pages of [`PAGE`] words of which only those holding
//! a word other than 0 are allocated.
//!
//! Why: a FAT32 volume has up to 2^25 clusters here, and most of a real
//! one is free. Two flat vectors took 256 MB for such a volume whatever
//! it held, and every pass over them cost a step per cluster (a fuzz
//! input claiming a 16 GiB volume ran at a few executions a second). Kept
//! in pages, memory and the passes follow the clusters in use: a page
//! never written is 0 throughout and is skipped whole.

/// Words in a page: 16 KiB.
pub const PAGE: usize = 4096;

/// `len` words, 0 until set.
pub struct Words {
    pages: Vec<Option<Box<[u32]>>>,
    len: usize,
}

impl Words {
    pub fn new(len: usize) -> Words {
        Words {
            pages: std::iter::repeat_with(|| None)
                .take(len.div_ceil(PAGE))
                .collect(),
            len,
        }
    }

    pub fn get(&self, i: usize) -> u32 {
        self.pages
            .get(i / PAGE)
            .and_then(Option::as_deref)
            .and_then(|p| p.get(i % PAGE))
            .copied()
            .unwrap_or(0)
    }

    /// Sets word `i` (past the end: nothing). Setting 0 where no page is
    /// allocates nothing.
    pub fn set(&mut self, i: usize, v: u32) {
        if i >= self.len {
            return;
        }
        let len = self.len;
        let Some(slot) = self.pages.get_mut(i / PAGE) else {
            return;
        };
        if slot.is_none() && v == 0 {
            return;
        }
        let page = slot.get_or_insert_with(|| {
            // The last page holds only the words up to `len`.
            let n = len.saturating_sub(i.saturating_sub(i % PAGE)).min(PAGE);
            vec![0; n].into_boxed_slice()
        });
        if let Some(w) = page.get_mut(i % PAGE) {
            *w = v;
        }
    }

    /// The pages allocated, as (index of their first word, words).
    pub fn pages(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.pages
            .iter()
            .enumerate()
            .filter_map(|(p, page)| Some((p.saturating_mul(PAGE), page.as_deref()?)))
    }

    /// Whether the page holding word `i` is allocated: where it is not,
    /// every word of it is 0.
    pub fn has_page(&self, i: usize) -> bool {
        self.pages.get(i / PAGE).is_some_and(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_as_set_and_only_written_pages_are_held() {
        let n = 3 * PAGE + 5;
        let mut w = Words::new(n);
        w.set(0, 0);
        w.set(PAGE + 7, 9);
        w.set(n - 1, 4);
        w.set(n, 5);
        w.set(2 * PAGE, 0);
        let held: Vec<usize> = w.pages().map(|(at, p)| at + p.len()).collect();
        assert_eq!(held, [2 * PAGE, n]);
        assert_eq!(
            (w.get(PAGE + 7), w.get(n - 1), w.get(n), w.get(5)),
            (9, 4, 0, 0)
        );
        assert!(w.has_page(PAGE) && !w.has_page(0) && !w.has_page(2 * PAGE));
        let mut flat = vec![0u32; n];
        flat[PAGE + 7] = 9;
        flat[n - 1] = 4;
        assert!((0..n).all(|i| w.get(i) == flat[i]));
    }
}
