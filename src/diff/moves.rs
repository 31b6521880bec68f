//! The directories a diff saw move, indexed by their old and their new
//! paths: what a path under them was or became is found by looking up
//! the path's own ancestors, at a cost of its depth, not of the number
//! of moves. (A scan of every move per changed name made a layer that
//! renamed 20,000 directories take 46 s to diff.)
use std::collections::HashMap;

/// One directory move: old path, new path, inode.
pub(super) type DirMove = (Vec<u8>, Vec<u8>, u64);

/// Directory moves in the order given, and where each path is.
#[derive(Default)]
pub(super) struct DirMoves {
    list: Vec<DirMove>,
    by_from: HashMap<Vec<u8>, Vec<usize>>,
    by_to: HashMap<Vec<u8>, Vec<usize>>,
}

impl DirMoves {
    /// Indexes `list`, kept in its order (the indexes the lookups give
    /// are positions in it).
    pub fn new(list: Vec<DirMove>) -> DirMoves {
        let mut by_from: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        let mut by_to: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (i, (from, to, _)) in list.iter().enumerate() {
            by_from.entry(from.clone()).or_default().push(i);
            by_to.entry(to.clone()).or_default().push(i);
        }
        DirMoves {
            list,
            by_from,
            by_to,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn list(&self) -> &[DirMove] {
        &self.list
    }

    /// The moves whose old path is `path`, `/`, or `path` up to one of
    /// its `/`s: every move whose old path may hold `path` (the caller's
    /// own test decides), in the order given.
    pub fn near_old(&self, path: &[u8]) -> Vec<usize> {
        near(&self.by_from, path)
    }

    /// [`DirMoves::near_old`] by new path.
    pub fn near_new(&self, path: &[u8]) -> Vec<usize> {
        near(&self.by_to, path)
    }

    /// The moves [`DirMoves::near_old`] names, in the order given.
    pub fn holding_old(&self, path: &[u8]) -> impl DoubleEndedIterator<Item = &DirMove> + '_ {
        self.near_old(path)
            .into_iter()
            .filter_map(|i| self.list.get(i))
    }

    /// The moves [`DirMoves::near_new`] names, in the order given.
    pub fn holding_new(&self, path: &[u8]) -> impl DoubleEndedIterator<Item = &DirMove> + '_ {
        self.near_new(path)
            .into_iter()
            .filter_map(|i| self.list.get(i))
    }
}

/// The positions `map` gives to `path`, to `/` and to each prefix of
/// `path` that ends before one of its `/`s, ascending.
fn near(map: &HashMap<Vec<u8>, Vec<usize>>, path: &[u8]) -> Vec<usize> {
    if map.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut add = |p: &[u8]| {
        if let Some(is) = map.get(p) {
            out.extend_from_slice(is);
        }
    };
    add(path);
    for (i, &b) in path.iter().enumerate() {
        if b == b'/' {
            add(path.get(..i).unwrap_or_default());
        }
    }
    add(b"/");
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_move_whose_path_may_hold_a_path() {
        let moves = DirMoves::new(vec![
            (b"/a".to_vec(), b"/x".to_vec(), 1),
            (b"/a/b".to_vec(), b"/y".to_vec(), 2),
            (b"/".to_vec(), b"/z".to_vec(), 3),
            (b"/ab".to_vec(), b"/x/c/d".to_vec(), 4),
            (b"/a/b/c".to_vec(), b"/w".to_vec(), 5),
        ]);
        assert_eq!(moves.near_old(b"/a/b/c"), vec![0, 1, 2, 4]);
        assert_eq!(moves.near_old(b"/abc"), vec![2]);
        assert_eq!(moves.near_new(b"/x/c/d/e"), vec![0, 3]);
        assert_eq!(moves.near_new(b"/q"), Vec::<usize>::new());
        assert_eq!(moves.near_old(b"/"), vec![2]);
        // Every move that holds the path is among them.
        for path in [&b"/a/b/c/d"[..], b"/ab/c", b"/", b"/x", b"a/b"] {
            let all: Vec<usize> = (0..moves.list().len())
                .filter(|&i| {
                    let f = &moves.list()[i].0;
                    path.starts_with(f)
                        && (f.as_slice() == b"/"
                            || path.len() == f.len()
                            || path.get(f.len()) == Some(&b'/'))
                })
                .collect();
            let near = moves.near_old(path);
            assert!(
                all.iter().all(|i| near.contains(i)),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }
}
