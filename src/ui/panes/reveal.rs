//! `/` in the tree: the search's state on the UI side (the walk itself is
//! [`crate::ui::search`], on the worker), and revealing a match: its
//! directories opened one reply at a time, the match selected. `n` goes to
//! the next match.
use super::tree::{Search, TreePane};
use crate::ui::action::Pane;
use crate::ui::context::{Effect, Effects, Shared};
use crate::ui::msg::{Found, Request};

impl TreePane {
    /// Whether a search is running on the worker.
    pub fn searching(&self) -> bool {
        self.search.as_ref().is_some_and(|s| s.found.is_none())
    }

    /// Esc during a search: forget it (the worker sees the cancel through
    /// its generation counter, which the run loop bumps on this key).
    pub fn cancel_search(&mut self) -> Effects {
        self.search = None;
        vec![Effect::Message("search cancelled".into())]
    }

    /// Enter in the search prompt: asks the worker.
    pub fn start_search(&mut self, needle: String, s: &Shared) -> Effects {
        if needle.is_empty() {
            return Vec::new();
        }
        self.search = Some(Search {
            needle: needle.clone(),
            found: None,
            at: 0,
        });
        vec![
            Effect::Message(format!("searching for {needle:?}…")),
            Effect::Request(Request::Search {
                as_of: s.as_of,
                needle,
            }),
        ]
    }

    /// The worker's answer: shows the first match.
    pub fn receive_found(&mut self, f: Found, s: &Shared) -> Effects {
        match &mut self.search {
            Some(search) if search.needle == f.needle && f.as_of == s.as_of => {
                search.found = Some(f);
                search.at = 0;
            }
            _ => return Vec::new(),
        }
        self.show_match(s)
    }

    /// `n`: the next match (`by` 1), `N`: the previous (-1).
    pub fn next_match(&mut self, s: &Shared, by: isize) -> Effects {
        let Some(search) = &mut self.search else {
            return vec![Effect::Message("no search yet: / to search".into())];
        };
        if let Some(f) = &search.found {
            let n = f.matches.len();
            if n > 0 {
                let at = search.at.min(n.saturating_sub(1));
                search.at = if by < 0 {
                    at.checked_sub(1).unwrap_or(n.saturating_sub(1))
                } else {
                    at.saturating_add(1).checked_rem(n).unwrap_or(0)
                };
            }
        }
        self.show_match(s)
    }

    /// Reveals the current match, and says which it is.
    fn show_match(&mut self, s: &Shared) -> Effects {
        let Some(Search {
            needle,
            found: Some(f),
            at,
        }) = &self.search
        else {
            return Vec::new();
        };
        let note = match f.stopped {
            Some(why) => format!(", stopped: {why}"),
            None => String::new(),
        };
        let Some(m) = f.matches.get(*at) else {
            return vec![Effect::Message(format!(
                "no name contains {needle:?} ({} directories searched{note})",
                f.dirs
            ))];
        };
        let message = format!(
            "{} (match {} of {}{note}; n: next)",
            m.path,
            at.saturating_add(1),
            f.matches.len()
        );
        self.reveal = Some(m.inos.clone());
        let mut fx = vec![Effect::Message(message), Effect::Focus(Pane::Tree)];
        fx.extend(self.advance_reveal(s));
        fx
    }

    /// Opens the next closed directory on the way to the match being
    /// revealed, or selects it when all are open.
    pub fn advance_reveal(&mut self, s: &Shared) -> Effects {
        let Some(path) = self.reveal.clone() else {
            return Vec::new();
        };
        let mut at = 0usize;
        let mut want = path.iter().copied().peekable();
        loop {
            let Some(node) = self.nodes.get(at) else {
                self.reveal = None;
                return Vec::new();
            };
            let Some(&next) = want.peek() else {
                self.sel = at;
                self.reveal = None;
                return Vec::new();
            };
            if !node.expanded {
                return vec![Effect::Request(Request::Dir {
                    as_of: s.as_of,
                    ino: node.ino,
                })];
            }
            let depth = node.depth;
            let below = at.saturating_add(1);
            let child = self
                .nodes
                .get(below..)
                .unwrap_or_default()
                .iter()
                .take_while(|n| n.depth > depth)
                .position(|n| n.depth == depth.saturating_add(1) && n.ino == next);
            match child {
                Some(p) => {
                    at = below.saturating_add(p);
                    want.next();
                }
                None => {
                    self.reveal = None;
                    return vec![Effect::Message("the match is no longer in the tree".into())];
                }
            }
        }
    }
}
