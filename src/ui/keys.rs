//! The keys, in one table ([`KEYS`]) that drives the key handler
//! ([`key_action`]), the help (`?`) and the key bar, so a key cannot be
//! bound in one place and described differently in another (gitui's
//! `key_list`). Also the key scripts of `layerscope render --keys`.
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::{Action, Pane};

/// A key as the table names it: a code, and whether Ctrl is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn k(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

const fn c(ch: char) -> Key {
    k(KeyCode::Char(ch))
}

const fn ctrl(ch: char) -> Key {
    Key {
        code: KeyCode::Char(ch),
        ctrl: true,
    }
}

/// One line of the help: the keys as written there, what each does, and
/// whether (and where) it has a place in the key bar.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    /// The keys, as the help writes them.
    pub names: &'static str,
    /// What each key does.
    pub keys: &'static [(Key, Action)],
    pub help: &'static str,
    /// The bar's (position, key, word), for the few keys it shows.
    pub bar: Option<(u8, &'static str, &'static str)>,
}

const fn line(names: &'static str, keys: &'static [(Key, Action)], help: &'static str) -> Binding {
    Binding {
        names,
        keys,
        help,
        bar: None,
    }
}

/// Every key of the UI outside a prompt.
pub const KEYS: &[Binding] = &[
    Binding {
        bar: Some((0, "q", "quit")),
        ..line(
            "q, Ctrl-C",
            &[(c('q'), Action::Quit), (ctrl('c'), Action::Quit)],
            "quit",
        )
    },
    Binding {
        bar: Some((1, "?", "help")),
        ..line("?", &[(c('?'), Action::Help)], "this help (any key closes it)")
    },
    Binding {
        bar: Some((2, "Tab", "pane")),
        ..line(
            "Tab, Shift-Tab",
            &[
                (k(KeyCode::Tab), Action::NextPane),
                (k(KeyCode::BackTab), Action::PrevPane),
            ],
            "next / previous pane",
        )
    },
    line(
        "1 … 8",
        &[
            (c('1'), Action::Focus(Pane::ORDER[0])),
            (c('2'), Action::Focus(Pane::ORDER[1])),
            (c('3'), Action::Focus(Pane::ORDER[2])),
            (c('4'), Action::Focus(Pane::ORDER[3])),
            (c('5'), Action::Focus(Pane::ORDER[4])),
            (c('6'), Action::Focus(Pane::ORDER[5])),
            (c('7'), Action::Focus(Pane::ORDER[6])),
            (c('8'), Action::Focus(Pane::ORDER[7])),
        ],
        "the pane with that number in the tab strip",
    ),
    line(
        "j, k, ↓, ↑",
        &[
            (c('j'), Action::Down),
            (k(KeyCode::Down), Action::Down),
            (c('k'), Action::Up),
            (k(KeyCode::Up), Action::Up),
        ],
        "move in the focused pane (elsewhere: scroll the hex view)",
    ),
    line(
        "PgDn, PgUp, Space",
        &[
            (k(KeyCode::PageDown), Action::PageDown),
            (c(' '), Action::PageDown),
            (k(KeyCode::PageUp), Action::PageUp),
        ],
        "a page down / up",
    ),
    line(
        "Home, End",
        &[
            (k(KeyCode::Home), Action::Top),
            (k(KeyCode::End), Action::Bottom),
        ],
        "the first / last row (hex: the start / end of the disk)",
    ),
    line(
        "Enter",
        &[(k(KeyCode::Enter), Action::Enter)],
        "chain: the disk as of that layer; tree: open, or a file's bytes; groups: a descriptor's fields (each marked in hex); changes: the file as of both layers",
    ),
    line(
        "Esc",
        &[(k(KeyCode::Esc), Action::Back)],
        "back: chain: the top layer again; groups: the list; side by side: the changes; close a prompt",
    ),
    Binding {
        bar: Some((3, "g", "go to")),
        ..line(
            "g",
            &[(c('g'), Action::Goto)],
            "go to an offset (0x400, 4096, 64K), a block (b<N>), an inode (i<N> or <N>)",
        )
    },
    Binding {
        bar: Some((4, "/", "search")),
        ..line(
            "/, n, N",
            &[
                (c('/'), Action::Search),
                (c('n'), Action::NextMatch),
                (c('N'), Action::PrevMatch),
            ],
            "search names through the whole tree (Esc cancels); the next / previous match (side by side: difference)",
        )
    },
    Binding {
        bar: Some((5, "m", "map")),
        ..line(
            "m",
            &[(c('m'), Action::ToggleHitMode)],
            "hit map: owners, served so far, each qcow2 dirty bitmap",
        )
    },
    line(
        "d",
        &[(c('d'), Action::Diff)],
        "the layer's changes (A/M/R/D); Enter: a file as of both layers",
    ),
    line(
        "Ctrl-Z, Ctrl-L",
        &[(ctrl('z'), Action::Suspend), (ctrl('l'), Action::Redraw)],
        "suspend (fg comes back); draw the screen anew",
    ),
    line(
        "mouse",
        &[],
        "click a tab, a pane or a row; the wheel scrolls the pane under it",
    ),
];

/// Keys while a prompt is open (go to, search): typing edits it.
pub const PROMPT_KEYS: &[(Key, Action)] = &[
    (k(KeyCode::Backspace), Action::Backspace),
    (k(KeyCode::Enter), Action::Enter),
    (k(KeyCode::Esc), Action::Back),
    (ctrl('c'), Action::Quit),
];

fn matches(key: &Key, ev: &KeyEvent) -> bool {
    key.code == ev.code && key.ctrl == ev.modifiers.contains(KeyModifiers::CONTROL)
}

/// The action for a key, given whether a prompt is open.
pub fn key_action(key: KeyEvent, prompt: bool) -> Option<Action> {
    if prompt {
        if let Some((_, a)) = PROMPT_KEYS.iter().find(|(k, _)| matches(k, &key)) {
            return Some(a.clone());
        }
        return match key.code {
            KeyCode::Char(ch) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                Some(Action::Char(ch))
            }
            _ => None,
        };
    }
    KEYS.iter()
        .flat_map(|b| b.keys)
        .find(|(k, _)| matches(k, &key))
        .map(|(_, a)| a.clone())
}

/// The key bar's entries, in their order: (key, word).
pub fn bar() -> Vec<(&'static str, &'static str)> {
    let mut items: Vec<(u8, &str, &str)> = KEYS.iter().filter_map(|b| b.bar).collect();
    items.sort_by_key(|i| i.0);
    items.into_iter().map(|(_, k, w)| (k, w)).collect()
}

/// Parses a key script: space-separated names (`Enter`, `Tab`, `BackTab`,
/// `Esc`, `Up`, `Down`, `PageUp`, `PageDown`, `Home`, `End`, `Space`,
/// `Backspace`, `C-c`) or text, typed one character at a time.
pub fn parse_keys(script: &str) -> Vec<KeyEvent> {
    let mut keys = Vec::new();
    for word in script.split_whitespace() {
        let code = match word {
            "Enter" => Some(KeyCode::Enter),
            "Tab" => Some(KeyCode::Tab),
            "BackTab" | "S-Tab" => Some(KeyCode::BackTab),
            "Esc" => Some(KeyCode::Esc),
            "Up" => Some(KeyCode::Up),
            "Down" => Some(KeyCode::Down),
            "PageUp" => Some(KeyCode::PageUp),
            "PageDown" => Some(KeyCode::PageDown),
            "Home" => Some(KeyCode::Home),
            "End" => Some(KeyCode::End),
            "Space" => Some(KeyCode::Char(' ')),
            "Backspace" => Some(KeyCode::Backspace),
            ctl if ctl.len() == 3 && ctl.starts_with("C-") => {
                if let Some(ch) = ctl.chars().nth(2) {
                    keys.push(KeyEvent::new(KeyCode::Char(ch), KeyModifiers::CONTROL));
                }
                None
            }
            text => {
                keys.extend(
                    text.chars()
                        .map(|c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
                );
                None
            }
        };
        if let Some(c) = code {
            keys.push(KeyEvent::new(c, KeyModifiers::NONE));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_key_is_in_the_help_once() {
        let mut seen = Vec::new();
        for b in KEYS {
            assert!(!b.help.is_empty());
            for (key, _) in b.keys {
                assert!(!seen.contains(key), "{key:?} bound twice");
                seen.push(*key);
            }
        }
        // The table drives the handler.
        for b in KEYS {
            for (key, action) in b.keys {
                let mods = if key.ctrl {
                    KeyModifiers::CONTROL
                } else {
                    KeyModifiers::NONE
                };
                let ev = KeyEvent::new(key.code, mods);
                assert_eq!(key_action(ev, false).as_ref(), Some(action));
            }
        }
        assert_eq!(
            bar(),
            vec![
                ("q", "quit"),
                ("?", "help"),
                ("Tab", "pane"),
                ("g", "go to"),
                ("/", "search"),
                ("m", "map")
            ]
        );
    }

    #[test]
    fn prompts_take_text_and_shifted_keys_still_work() {
        let ev = |c, m| KeyEvent::new(c, m);
        assert_eq!(
            key_action(ev(KeyCode::Char('q'), KeyModifiers::NONE), true),
            Some(Action::Char('q'))
        );
        assert_eq!(
            key_action(ev(KeyCode::Char('c'), KeyModifiers::CONTROL), true),
            Some(Action::Quit)
        );
        assert_eq!(
            key_action(ev(KeyCode::BackTab, KeyModifiers::SHIFT), false),
            Some(Action::PrevPane)
        );
        assert_eq!(
            key_action(ev(KeyCode::Char('?'), KeyModifiers::SHIFT), false),
            Some(Action::Help)
        );
    }
}
