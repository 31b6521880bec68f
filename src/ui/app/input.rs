//! The app's side of input: each key goes to the focused pane first, then
//! to the keys every pane shares, then to the pane's own; a click focuses
//! a pane and picks a row, the wheel scrolls the pane under it; the
//! prompt (`g`, `/`) takes text.
use super::{App, Prompt, PromptKind};
use crate::ui::action::{Action, Pane};
use crate::ui::context::{requests, Effect, Effects};
use crate::ui::goto::{parse, Target};
use crate::ui::msg::{HitMode, Request};

impl App {
    pub(super) fn apply_inner(&mut self, action: Action) -> Effects {
        if let Action::Resize(w, h) = action {
            self.shared.width = w;
            self.shared.height = h;
            self.hex.clamp(&self.shared);
            return requests(self.refresh());
        }
        if self.prompt.is_some() {
            return self.prompt_key(action);
        }
        if self.help && action.is_user() {
            self.help = false;
            if action == Action::Help || action == Action::Back {
                return Vec::new();
            }
        }
        if action.is_user() {
            self.message = None;
        }
        match action {
            Action::Click(p, row) => self.click(p, row),
            Action::Wheel(p, n) => self.wheel(p, n),
            _ => self.key(action),
        }
    }

    /// A click on a pane's row: the pane takes the focus, and the row
    /// (clicked again: opened).
    fn click(&mut self, p: Pane, row: u16) -> Effects {
        let mut fx = Vec::new();
        // A click that brings a pane in only selects; on a focused pane,
        // a click on the selected row opens it.
        let open = self.shared.focus == p;
        if !open {
            self.shared.focus = p;
            fx.extend(self.lazy().into_iter().map(Effect::Request));
        }
        let row = usize::from(row);
        let s = &self.shared;
        let more = match p {
            Pane::Tree if self.changes.show => self.changes.click(row, open, s),
            Pane::Tree => self.tree.click(row, open, s),
            Pane::Chain => self.chain.click(row, open, s),
            Pane::Superblock => self.superblock.click(row, s),
            Pane::Volumes => self.volumes.click(row, open, s),
            _ => None,
        };
        fx.extend(more.unwrap_or_default());
        fx
    }

    /// The wheel over a pane scrolls that pane, focused or not.
    fn wheel(&mut self, p: Pane, rows: i8) -> Effects {
        if matches!(p, Pane::Status | Pane::HitMap) {
            return Vec::new();
        }
        let focus = self.shared.focus;
        self.shared.focus = p;
        let step = if rows < 0 { Action::Up } else { Action::Down };
        let mut fx = Vec::new();
        for _ in 0..rows.unsigned_abs() {
            fx.extend(self.key(step.clone()));
        }
        self.shared.focus = focus;
        fx
    }

    /// A key: the focused pane first, then the keys every pane shares,
    /// then the pane's own, else the hex view scrolls.
    fn key(&mut self, action: Action) -> Effects {
        let s = &self.shared;
        let first = match s.focus {
            Pane::Tree | Pane::Hex if self.changes.show => self.changes.key(&action, s),
            Pane::Groups => self.groups.key(&action, s),
            Pane::Tree => self.tree.key(&action, s),
            _ => None,
        };
        if let Some(fx) = first {
            return fx;
        }
        if let Some(fx) = self.global_key(&action) {
            return fx;
        }
        let s = &self.shared;
        let pane = match s.focus {
            Pane::Superblock => self.superblock.key(&action),
            Pane::Chain => self.chain.key(&action, s),
            Pane::Volumes => self.volumes.key(&action, s),
            _ => None,
        };
        if let Some(fx) = pane {
            return fx;
        }
        // Elsewhere the moving keys scroll the hex view.
        self.hex
            .key(&action, &self.shared)
            .map(Effect::Request)
            .into_iter()
            .collect()
    }

    /// The keys every pane shares.
    fn global_key(&mut self, action: &Action) -> Option<Effects> {
        let focus = self.shared.focus;
        Some(match action {
            Action::Quit => {
                self.quit = true;
                Vec::new()
            }
            Action::Help => {
                self.help = true;
                Vec::new()
            }
            Action::NextPane => vec![Effect::Focus(focus.step(1))],
            Action::PrevPane => vec![Effect::Focus(focus.step(-1))],
            Action::Focus(p) => vec![Effect::Focus(*p)],
            Action::Goto => self.open_prompt(PromptKind::Goto),
            Action::Search => {
                if !self.shared.fs.is_present() {
                    return Some(vec![Effect::Error("no filesystem to search".into())]);
                }
                self.open_prompt(PromptKind::Search)
            }
            Action::NextMatch => self.tree.next_match(&self.shared, 1),
            Action::PrevMatch => self.tree.next_match(&self.shared, -1),
            Action::Back if self.tree.searching() => self.tree.cancel_search(),
            Action::Diff => self.changes.toggle(&self.shared),
            Action::ToggleHitMode => {
                self.hitmap.toggle();
                requests(self.refresh())
            }
            Action::Tick => {
                let runtime = self.hitmap.mode == HitMode::Runtime;
                requests(self.refresh().into_iter().filter(|r| {
                    matches!(r, Request::Nbd | Request::Ssh)
                        || (runtime && matches!(r, Request::Grid { .. }))
                }))
            }
            _ => return None,
        })
    }

    fn open_prompt(&mut self, kind: PromptKind) -> Effects {
        self.prompt = Some(Prompt {
            kind,
            text: String::new(),
        });
        Vec::new()
    }

    /// A key while the prompt is open.
    fn prompt_key(&mut self, action: Action) -> Effects {
        let Some(p) = &mut self.prompt else {
            return Vec::new();
        };
        match action {
            Action::Char(c) => p.text.push(c),
            Action::Backspace => {
                p.text.pop();
            }
            Action::Back => self.prompt = None,
            Action::Quit => self.quit = true,
            Action::Enter => {
                let Prompt { kind, text } = self.prompt.take().unwrap_or(Prompt {
                    kind: PromptKind::Goto,
                    text: String::new(),
                });
                return match kind {
                    PromptKind::Search => self.tree.start_search(text, &self.shared),
                    PromptKind::Goto => self.goto(&text),
                };
            }
            _ => {}
        }
        Vec::new()
    }

    /// `g`: goes to what `text` names (see [`super::goto`]).
    fn goto(&mut self, text: &str) -> Effects {
        let s = &self.shared;
        let off = match parse(text) {
            Err(e) => return vec![Effect::Error(e)],
            Ok(Target::Inode(ino)) => {
                if !s.fs.is_present() {
                    return vec![Effect::Error("no filesystem: no inodes to go to".into())];
                }
                return vec![Effect::Request(Request::Inode {
                    as_of: s.as_of,
                    ino,
                })];
            }
            Ok(Target::Block(block)) => {
                // Through the volume's segments (a striped LV's block may
                // be anywhere): the worker knows where.
                return vec![Effect::Request(Request::Block {
                    as_of: s.as_of,
                    block,
                })];
            }
            Ok(Target::Offset(o)) => o,
        };
        if off >= s.disk_size {
            return vec![Effect::Error(format!(
                "{off:#x} is past the end of the disk ({:#x})",
                s.disk_size
            ))];
        }
        vec![
            Effect::HexTo {
                offset: off,
                clear: false,
            },
            Effect::Focus(Pane::Hex),
        ]
    }
}
