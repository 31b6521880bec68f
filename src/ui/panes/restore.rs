//! Keeping the tree's state across layer switches: the directories that
//! were open and the selected row are remembered by path; as of the new
//! layer, each of those directories that still exists is opened again
//! (one reply at a time) and the selection goes back to the same path, or
//! to its nearest ancestor that exists there.
use std::collections::HashSet;

use super::tree::{Restore, TreePane};
use crate::ui::context::{Effect, Effects, Shared};
use crate::ui::msg::Request;

impl TreePane {
    /// Forgets the rows (the layer changed) but remembers which paths were
    /// open and selected.
    pub fn remember(&mut self) {
        let open: HashSet<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_dir && n.expanded)
            .map(|(i, _)| self.path_of(i))
            .collect();
        let selected = (self.sel < self.nodes.len()).then(|| self.path_of(self.sel));
        let keep = match self.restore.take() {
            // Still restoring from an earlier switch: keep that goal.
            Some(r) if self.nodes.len() <= 1 => Some(r),
            _ if open.is_empty() => None,
            _ => Some(Restore {
                open,
                selected,
                asked: HashSet::new(),
            }),
        };
        self.clear();
        self.restore = keep;
    }

    /// Opens the next remembered directories present in the tree; when
    /// none is left to wait for, selects the remembered path.
    pub fn advance_restore(&mut self, s: &Shared) -> Effects {
        let Some(mut r) = self.restore.take() else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.is_dir
                && !n.expanded
                && !r.asked.contains(&n.ino)
                && r.open.contains(&self.path_of(i))
            {
                r.asked.insert(n.ino);
                fx.push(Effect::Request(Request::Dir {
                    as_of: s.as_of,
                    ino: n.ino,
                }));
            }
        }
        let waiting = self
            .nodes
            .iter()
            .any(|n| n.is_dir && !n.expanded && r.asked.contains(&n.ino));
        if waiting {
            self.restore = Some(r);
            return fx;
        }
        // All open: the selection back on its path, or the nearest
        // ancestor there is.
        if let Some(mut want) = r.selected {
            loop {
                if let Some(i) = (0..self.nodes.len()).find(|&i| self.path_of(i) == want) {
                    self.sel = i;
                    break;
                }
                match want.rfind('/') {
                    Some(0) | None => break,
                    Some(k) => want.truncate(k),
                }
            }
        }
        fx
    }
}
