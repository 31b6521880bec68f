//! `/` in the tree, the worker's side: a name fragment searched through
//! the whole directory tree (depth first, in the tree's own order, with
//! bounded work and results; a newer search or Esc cancels a running one).
//! Revealing the matches in the tree is the tree pane's
//! ([`super::panes::reveal`]).
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

pub use super::msg::{Found, Match};
use crate::fs::ext::Ext4;

/// Matches kept at most.
pub const MAX_MATCHES: usize = 1000;
/// Directories read at most in one search.
const MAX_DIRS: usize = 1 << 16;
/// Entries waiting to be visited at most (a few huge directories).
const MAX_PENDING: usize = 1 << 20;

/// Searches the tree of `fs` for names containing `needle` (ASCII case
/// folded). Stops when `cancel` moves away from `generation`.
pub fn search(fs: &Ext4, as_of: usize, needle: &str, cancel: &AtomicU64, generation: u64) -> Found {
    let folded = needle.to_ascii_lowercase().into_bytes();
    let filetype = fs.superblock().has_filetype();
    let mut found = Found {
        as_of,
        needle: needle.to_owned(),
        matches: Vec::new(),
        dirs: 0,
        stopped: None,
    };
    // Directories opened so far: (inode, escaped name, parent index);
    // index 0 is the root.
    let mut dirs: Vec<(u64, String, usize)> = vec![(2, String::new(), 0)];
    let mut seen: HashSet<u64> = HashSet::from([2]);
    // Entries to visit, the next on top: (inode, raw name, is_dir, parent).
    let mut pending: Vec<(u64, Vec<u8>, bool, usize)> = Vec::new();
    let mut open = Some(0usize);
    loop {
        if let Some(d) = open.take() {
            if cancel.load(Ordering::Relaxed) != generation {
                found.stopped = Some("cancelled");
                break;
            }
            found.dirs += 1;
            let Ok(node) = fs.inode(dirs[d].0) else {
                continue;
            };
            let mut errors = Vec::new();
            let Ok(entries) = fs.read_dir(&node, &mut errors) else {
                continue;
            };
            let mut children: Vec<(u64, Vec<u8>, bool, usize)> = entries
                .into_iter()
                .filter(|e| !e.is_dot_or_dotdot() && e.inode != 0)
                .map(|e| {
                    let ino = u64::from(e.inode);
                    let is_dir = if filetype {
                        e.file_type == 2
                    } else {
                        fs.inode(ino).is_ok_and(|i| i.is_dir())
                    };
                    (ino, e.name, is_dir, d)
                })
                .collect();
            // The tree's order (directories first, by shown name),
            // reversed onto the stack.
            children.sort_by_cached_key(|c| (!c.2, crate::escape::printable_bytes(&c.1)));
            if pending.len() + children.len() > MAX_PENDING {
                found.stopped = Some("too many entries");
                break;
            }
            pending.extend(children.into_iter().rev());
        }
        let Some((ino, name, is_dir, parent)) = pending.pop() else {
            break;
        };
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
            while at != 0 {
                inos.push(dirs[at].0);
                parts.push(dirs[at].1.clone());
                at = dirs[at].2;
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
            dirs.push((ino, shown, parent));
            open = Some(dirs.len() - 1);
        }
    }
    found
}
