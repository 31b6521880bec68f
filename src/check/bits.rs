//! A fixed-size bit set: which blocks (or inodes) a check found in use.
//! Sized by the caller from what the disk really holds, never from a count
//! a damaged superblock claims.

/// A set of `len` bits, all clear at first.
#[derive(Clone, Debug, Default)]
pub struct Bits {
    words: Vec<u64>,
    len: u64,
}

impl Bits {
    /// `len` clear bits (8 bytes per 64).
    pub fn new(len: u64) -> Bits {
        let words = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        Bits {
            words: vec![0; words],
            len,
        }
    }

    /// How many bits.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(i: u64) -> (usize, u64) {
        (
            usize::try_from(i / 64).unwrap_or(usize::MAX),
            1u64 << (i % 64),
        )
    }

    /// Whether bit `i` is set (false past the end).
    pub fn get(&self, i: u64) -> bool {
        let (w, m) = Self::at(i);
        i < self.len && self.words.get(w).is_some_and(|x| x & m != 0)
    }

    /// Sets bit `i` and returns whether it was set before; past the end,
    /// nothing is set and `None` is returned.
    pub fn set(&mut self, i: u64) -> Option<bool> {
        if i >= self.len {
            return None;
        }
        let (w, m) = Self::at(i);
        let word = self.words.get_mut(w)?;
        let was = *word & m != 0;
        *word |= m;
        Some(was)
    }
}

/// Ranges of set positions, written as e2fsck writes bitmap differences:
/// `1234`, `(1236--1240)`.
pub fn ranges(list: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &b in list {
        match out.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(b) => *end = b,
            _ => out.push((b, b)),
        }
    }
    out
}

/// One range as e2fsck prints it, with its sign.
pub fn range_text(sign: char, (a, b): (u64, u64)) -> String {
    if a == b {
        format!("{sign}{a}")
    } else {
        format!("{sign}({a}--{b})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_bounds() {
        let mut b = Bits::new(130);
        assert_eq!(b.set(129), Some(false));
        assert_eq!(b.set(129), Some(true));
        assert!(b.get(129) && !b.get(128) && !b.get(5000));
        assert_eq!(b.set(130), None);
    }

    #[test]
    fn ranges_like_e2fsck() {
        let r = ranges(&[1, 2, 3, 7, 9, 10]);
        assert_eq!(r, vec![(1, 3), (7, 7), (9, 10)]);
        assert_eq!(range_text('-', (1, 3)), "-(1--3)");
        assert_eq!(range_text('+', (7, 7)), "+7");
    }
}
