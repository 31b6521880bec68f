//! A tree walk over any [`Filesystem`], for the commands that visit every
//! file (`path`, `owner`, `timeline`, `find`, `grep`, `extract`): depth
//! first, one directory listing held at a time per level, each directory
//! entered once (a damaged filesystem whose directories link in a loop
//! cannot make it run forever), damage reported and the walk continued.
use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::fs::{DirEntry, FileType, Filesystem, NodeId};

/// One entry met by the walk.
pub(super) struct Visit<'a> {
    /// The full path, raw bytes (`/a/b`).
    pub path: &'a [u8],
    pub entry: &'a DirEntry,
    /// The entry's type (read from the node when the entry records none).
    #[allow(dead_code)] // for find's --type, next
    pub file_type: FileType,
}

/// The type of `e`: the entry's own, or its node's.
pub(super) fn type_of(fs: &dyn Filesystem, e: &DirEntry) -> FileType {
    e.file_type
        .or_else(|| fs.metadata(e.node).ok().map(|m| m.file_type))
        .unwrap_or(FileType::Unknown)
}

/// `base` + `/` + `name`.
pub(super) fn join(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Walks the tree under directory `start` (named `start_path`), calling
/// `each` for every entry but `.` and `..`, parents before children, until
/// it breaks. Damage (a directory that cannot be read, a bad block) goes
/// to `warn` and the walk goes on.
pub(super) fn walk(
    fs: &dyn Filesystem,
    start: NodeId,
    start_path: &[u8],
    each: &mut dyn FnMut(&Visit<'_>) -> ControlFlow<()>,
    warn: &mut dyn FnMut(String),
) {
    let mut seen: HashSet<NodeId> = HashSet::new();
    seen.insert(start);
    let mut stack: Vec<(NodeId, Vec<u8>)> = vec![(start, start_path.to_vec())];
    while let Some((dir, path)) = stack.pop() {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        if let Err(e) = fs.read_dir(dir, &mut problems, &mut |e| {
            if !e.is_dot_or_dotdot() {
                entries.push(e);
            }
            ControlFlow::Continue(())
        }) {
            warn(format!("{}: {e}", crate::escape::printable_bytes(&path)));
        }
        for p in problems {
            warn(format!("{}: {p}", crate::escape::printable_bytes(&path)));
        }
        let mut subdirs = Vec::new();
        for e in &entries {
            let file_type = type_of(fs, e);
            let child = join(&path, &e.name);
            let v = Visit {
                path: &child,
                entry: e,
                file_type,
            };
            if each(&v).is_break() {
                return;
            }
            if file_type == FileType::Directory {
                if seen.insert(e.node) {
                    subdirs.push((e.node, child));
                } else {
                    warn(format!(
                        "{}: directory {} met twice (a loop or a hard-linked directory); not entered again",
                        crate::escape::printable_bytes(&child),
                        fs.node_name(e.node)
                    ));
                }
            }
        }
        // Reversed, so that the first subdirectory is walked first.
        stack.extend(subdirs.into_iter().rev());
    }
}
