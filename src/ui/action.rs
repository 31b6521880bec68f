//! What the user can ask for ([`Action`]) and the panes it can be asked
//! of ([`Pane`]). Keys, the mouse and key scripts all end up here; nothing
//! in this module knows about keys (that is [`super::keys`]).

/// The panes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pane {
    Chain,
    Status,
    Tree,
    Superblock,
    Groups,
    Hex,
    HitMap,
    Volumes,
}

impl Pane {
    /// Tab order, and the narrow layout's tab line.
    pub const ORDER: [Pane; 8] = [
        Pane::Chain,
        Pane::Tree,
        Pane::Hex,
        Pane::HitMap,
        Pane::Superblock,
        Pane::Groups,
        Pane::Status,
        Pane::Volumes,
    ];

    /// The pane's name on its tab.
    pub fn name(self) -> &'static str {
        match self {
            Pane::Chain => "Chain",
            Pane::Status => "Status",
            Pane::Tree => "Tree",
            Pane::Superblock => "Superblock",
            Pane::Groups => "Groups",
            Pane::Hex => "Hex",
            Pane::HitMap => "Hit map",
            Pane::Volumes => "Volumes",
        }
    }

    /// The pane `by` steps along [`Pane::ORDER`], wrapping around.
    pub fn step(self, by: isize) -> Pane {
        let n = Self::ORDER.len();
        let i = Self::ORDER.iter().position(|p| *p == self).unwrap_or(0);
        let back = by.unsigned_abs().checked_rem(n).unwrap_or(0);
        let j = if by < 0 {
            i.saturating_add(n).saturating_sub(back)
        } else {
            i.saturating_add(back)
        };
        j.checked_rem(n)
            .and_then(|j| Self::ORDER.get(j))
            .copied()
            .unwrap_or(self)
    }
}

/// What the user asked for (from keys, mouse or a script).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    NextPane,
    PrevPane,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Enter,
    Back,
    Help,
    /// Start the "go to" prompt.
    Goto,
    /// Start the search prompt (`/`).
    Search,
    /// Show the next search match (`n`); in the side-by-side view, the
    /// next difference.
    NextMatch,
    /// The previous match or difference (`N`).
    PrevMatch,
    /// A character typed into the prompt.
    Char(char),
    Backspace,
    ToggleHitMode,
    /// Show or hide what the layer in view changed.
    Diff,
    /// The terminal's new size.
    Resize(u16, u16),
    /// Time passes: refresh live data.
    Tick,
    /// Focus a pane (a digit, a click on its tab).
    Focus(Pane),
    /// A click on row `row` (0 is the first row inside the frame) of a
    /// pane.
    Click(Pane, u16),
    /// The wheel over a pane: rows down (negative: up).
    Wheel(Pane, i8),
    /// Stop the process (Ctrl-Z); `fg` brings it back.
    Suspend,
    /// Draw the whole screen anew (Ctrl-L).
    Redraw,
}

impl Action {
    /// Whether the action comes from the user (a key or a click), as
    /// opposed to the terminal or the clock: only those close the help
    /// and clear the message line.
    pub fn is_user(&self) -> bool {
        !matches!(self, Action::Resize(..) | Action::Tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepping_wraps_both_ways() {
        assert_eq!(Pane::Chain.step(-1), Pane::Volumes);
        assert_eq!(Pane::Volumes.step(1), Pane::Chain);
        assert_eq!(Pane::Hex.step(2), Pane::Superblock);
        for p in Pane::ORDER {
            assert_eq!(p.step(1).step(-1), p);
        }
    }
}
