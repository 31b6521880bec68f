//! Which lost name of a file became which new name. A file that persists
//! across the two views but lost names and gained others was moved; when
//! it has several names (hard links), pairing them in path order can tie
//! one name's old path to another name's new one, and a moved directory
//! then hides the name left over (its old path is "under the moved
//! directory" and looks like it only moved with it). So names are paired
//! by what really happened to them, in this order:
//!
//! 1. the old path carried by a moved directory to exactly the new path;
//! 2. the same file name (a move to another directory);
//! 3. what is left, in path order.
use super::moves::DirMoves;
use super::Name;

/// Where the moves of directories `moves` (old path, new path) carry
/// `path`: the innermost moved directory holding it decides (a move
/// inside a moved directory is recorded with its full new path).
pub(super) fn carried(path: &[u8], moves: &DirMoves) -> Option<Vec<u8>> {
    carry(path, moves, false)
}

/// Where `path`, a new path, was before the moves of directories
/// `moves`: [`carried`] backwards.
pub(super) fn carried_back(path: &[u8], moves: &DirMoves) -> Option<Vec<u8>> {
    carry(path, moves, true)
}

fn carry(path: &[u8], moves: &DirMoves, back: bool) -> Option<Vec<u8>> {
    let near: Vec<&super::moves::DirMove> = if back {
        moves.holding_new(path).collect()
    } else {
        moves.holding_old(path).collect()
    };
    near.into_iter()
        .map(|(f, t, _)| if back { (t, f) } else { (f, t) })
        .filter_map(|(f, t)| super::under(path, f).map(|rel| (f.len(), t, rel)))
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, t, rel)| {
            let mut p = if t.as_slice() == b"/" {
                Vec::new()
            } else {
                t.clone()
            };
            p.extend_from_slice(rel);
            p
        })
}

/// The last component of `path`.
fn file_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// Pairs `gone` (names lost, sorted by path) with `new` (names gained,
/// sorted): indexes `(g, n)` of the moves, in the order of `new`.
pub(super) fn pair_names(gone: &[Name], new: &[Name], moves: &DirMoves) -> Vec<(usize, usize)> {
    let mut g_used = vec![false; gone.len()];
    let mut n_used = vec![false; new.len()];
    let mut out = Vec::new();
    let mut take = |g: usize, n: usize, g_used: &mut Vec<bool>, n_used: &mut Vec<bool>| {
        if let (Some(gu), Some(nu)) = (g_used.get_mut(g), n_used.get_mut(n)) {
            if !*gu && !*nu {
                *gu = true;
                *nu = true;
                out.push((g, n));
            }
        }
    };
    if !moves.is_empty() {
        for (gi, g) in gone.iter().enumerate() {
            if let Some(to) = carried(&g.path, moves) {
                if let Some(ni) = new.iter().position(|n| n.path == to) {
                    take(gi, ni, &mut g_used, &mut n_used);
                }
            }
        }
    }
    for (gi, g) in gone.iter().enumerate() {
        let name = file_name(&g.path);
        if let Some(ni) = new.iter().enumerate().position(|(ni, n)| {
            !n_used.get(ni).copied().unwrap_or(true) && file_name(&n.path) == name
        }) {
            take(gi, ni, &mut g_used, &mut n_used);
        }
    }
    let free = |used: &[bool]| -> Vec<usize> {
        (0..used.len())
            .zip(used)
            .filter(|(_, &u)| !u)
            .map(|(i, _)| i)
            .collect()
    };
    let (free_g, free_n) = (free(&g_used), free(&n_used));
    for (&g, &n) in free_g.iter().zip(&free_n) {
        out.push((g, n));
    }
    out.sort_by_key(|&(_, n)| n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(p: &str) -> Name {
        Name {
            path: p.as_bytes().to_vec(),
            ino: 12,
            dir: false,
            file_type: "regular",
        }
    }

    fn moves(list: &[(&str, &str)]) -> DirMoves {
        DirMoves::new(
            list.iter()
                .map(|(f, t)| (f.as_bytes().to_vec(), t.as_bytes().to_vec(), 2))
                .collect(),
        )
    }

    #[test]
    fn a_moved_directory_carries_the_name_that_stayed() {
        // /d/a and /d/b are one file; /d moved to /x; /d/a was replaced
        // by another file, so only b is this file's name now.
        let gone = [name("/d/a"), name("/d/b")];
        let new = [name("/x/b")];
        assert_eq!(
            pair_names(&gone, &new, &moves(&[("/d", "/x")])),
            vec![(1, 0)]
        );
    }

    #[test]
    fn the_same_file_name_then_path_order() {
        let gone = [name("/a/one"), name("/a/two")];
        let new = [name("/b/three"), name("/b/two")];
        assert_eq!(pair_names(&gone, &new, &moves(&[])), vec![(0, 0), (1, 1)]);
        assert_eq!(
            carried(b"/r/s/t", &moves(&[("/r", "/")])),
            Some(b"/s/t".to_vec())
        );
        let nested = moves(&[("/r", "/q"), ("/r/s", "/z")]);
        assert_eq!(carried(b"/r/s/t", &nested), Some(b"/z/t".to_vec()));
        assert_eq!(carried_back(b"/z/t", &nested), Some(b"/r/s/t".to_vec()));
        assert_eq!(carried_back(b"/q/u", &nested), Some(b"/r/u".to_vec()));
        assert_eq!(carried(b"/rs/t", &nested), None);
    }
}
