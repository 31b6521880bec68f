//! `/` in the tree, the worker's side: a name fragment searched through
//! the whole directory tree (depth first, in the tree's own order, with
//! bounded work and results; a newer search or Esc cancels a running one).
//! Revealing the matches in the tree is the tree pane's
//! ([`super::panes::reveal`]).
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

pub use super::msg::{Found, Match};
use crate::fs::{FileType, Filesystem};

/// Matches kept at most.
pub const MAX_MATCHES: usize = 1000;
/// Directories read at most in one search.
const MAX_DIRS: usize = 1 << 16;
/// Bytes of entries waiting to be visited (names and their bookkeeping)
/// at most: a few huge directories of 255-byte names stop the search
/// here, with a note, rather than taking gigabytes.
const MAX_PENDING_BYTES: usize = 32 << 20;
/// Bookkeeping per waiting entry or opened directory, besides its name.
const ENTRY_OVERHEAD: usize = 48;

/// Searches the tree of `fs` for names containing `needle` (ASCII case
/// folded). Stops when `cancel` moves away from `generation`.
pub fn search(
    fs: &dyn Filesystem,
    as_of: usize,
    needle: &str,
    cancel: &AtomicU64,
    generation: u64,
) -> Found {
    let folded = needle.to_ascii_lowercase().into_bytes();
    let mut found = Found {
        as_of,
        needle: needle.to_owned(),
        matches: Vec::new(),
        dirs: 0,
        stopped: None,
    };
    // Directories opened so far: (inode, escaped name, parent index);
    // index 0 is the root.
    let mut dirs: Vec<(u64, String, usize)> = vec![(fs.root(), String::new(), 0)];
    let mut seen: HashSet<u64> = HashSet::from([fs.root()]);
    // Entries to visit, the next on top: (inode, raw name, is_dir, parent).
    let mut pending: Vec<(u64, Vec<u8>, bool, usize)> = Vec::new();
    let mut open = Some(0usize);
    // Bytes held by `pending` and `dirs`.
    let mut held = 0usize;
    loop {
        if let Some(d) = open.take() {
            if cancel.load(Ordering::Relaxed) != generation {
                found.stopped = Some("cancelled");
                break;
            }
            found.dirs = found.dirs.saturating_add(1);
            // Listed through the filesystem seam, entry by entry, so the
            // memory limit applies while a huge directory is read.
            let mut problems = Vec::new();
            let mut children: Vec<(u64, Vec<u8>, bool, usize)> = Vec::new();
            let mut over = false;
            let dir = dirs.get(d).map_or(0, |e| e.0);
            let listed = fs.read_dir(dir, &mut problems, &mut |e| {
                if e.is_dot_or_dotdot() || (e.node == 0 && fs.root() != 0) {
                    return std::ops::ControlFlow::Continue(());
                }
                held = held.saturating_add(e.name.len().saturating_add(ENTRY_OVERHEAD));
                if held > MAX_PENDING_BYTES {
                    over = true;
                    return std::ops::ControlFlow::Break(());
                }
                // The entry's own type where it records one (ext with
                // filetype, XFS v5, FAT), else the node's.
                let is_dir = match e.file_type {
                    Some(t) => t == FileType::Directory,
                    None => fs
                        .metadata(e.node)
                        .is_ok_and(|m| m.file_type == FileType::Directory),
                };
                children.push((e.node, e.name, is_dir, d));
                std::ops::ControlFlow::Continue(())
            });
            if over {
                found.stopped = Some("too many entries (memory limit)");
                break;
            }
            if listed.is_err() {
                continue;
            }
            // The tree's order (directories first, by shown name),
            // reversed onto the stack.
            children.sort_by_cached_key(|c| (!c.2, crate::escape::printable_bytes(&c.1)));
            pending.extend(children.into_iter().rev());
        }
        let Some((ino, name, is_dir, parent)) = pending.pop() else {
            break;
        };
        held = held.saturating_sub(name.len().saturating_add(ENTRY_OVERHEAD));
        let shown = crate::escape::printable_bytes(&name);
        if name
            .to_ascii_lowercase()
            .windows(folded.len().max(1))
            .any(|w| w == folded.as_slice())
            || folded.is_empty()
        {
            let mut inos = vec![ino];
            let mut parts = vec![shown.clone()];
            let mut at = parent;
            // Parents come before their children in `dirs`: this ends.
            while let Some(d) = dirs.get(at).filter(|_| at != 0) {
                inos.push(d.0);
                parts.push(d.1.clone());
                at = d.2;
            }
            inos.reverse();
            parts.reverse();
            found.matches.push(Match {
                inos,
                path: format!("/{}", parts.join("/")),
            });
            if found.matches.len() >= MAX_MATCHES {
                found.stopped = Some("match limit");
                break;
            }
        }
        // Each directory once: a damaged tree may loop.
        if is_dir && seen.insert(ino) {
            if dirs.len() >= MAX_DIRS {
                found.stopped = Some("directory limit");
                break;
            }
            held = held.saturating_add(shown.len().saturating_add(ENTRY_OVERHEAD));
            dirs.push((ino, shown, parent));
            open = dirs.len().checked_sub(1);
        }
    }
    found
}
