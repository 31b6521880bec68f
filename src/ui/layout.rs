//! Where each pane goes for a terminal size: a pure function of the
//! [`Shared`] state, used by drawing, by the mouse (which pane is under
//! the pointer) and by the panes themselves (how many rows a page is).
//!
//! Wide layout (at least 110x30), every pane visible:
//!
//! ```text
//! ┌Chain───────┐┌Hex──────────────────────────────────────┐
//! │▶2 top.qcow2││0000000400 53 ef 01 00 …  S⋄•⋄           │
//! │ 1 update   ││…                                        │
//! ├Status──────┤│                                         │
//! ├Hit map─────┤│                                         │
//! │██··▒▒      ││                                         │
//! └────────────┘└─────────────────────────────────────────┘
//!  q quit  ? help  Tab pane  g go to  m map mode   [message]
//! ```
//!
//! Narrow (80x24): a tab line, the focused pane full size (Hex first), and
//! the key bar; Tab brings in the others.
use ratatui::layout::{Constraint, Direction, Layout, Position, Rect};

use super::action::Pane;
use super::context::Shared;

/// Where each pane goes for a terminal size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    pub chain: Option<Rect>,
    pub status: Option<Rect>,
    pub tree: Option<Rect>,
    pub superblock: Option<Rect>,
    pub groups: Option<Rect>,
    pub hex: Option<Rect>,
    pub hitmap: Option<Rect>,
    pub tabs: Option<Rect>,
    pub bar: Rect,
}

impl Areas {
    /// The area of `pane`, when it is on screen.
    pub fn of(&self, pane: Pane) -> Option<Rect> {
        match pane {
            Pane::Chain => self.chain,
            Pane::Status => self.status,
            Pane::Tree => self.tree,
            Pane::Superblock => self.superblock,
            Pane::Groups => self.groups,
            Pane::Hex => self.hex,
            Pane::HitMap => self.hitmap,
        }
    }

    /// The pane under a screen position.
    pub fn pane_at(&self, column: u16, row: u16) -> Option<Pane> {
        let at = Position::new(column, row);
        Pane::ORDER
            .into_iter()
            .find(|p| self.of(*p).is_some_and(|r| r.contains(at)))
    }
}

/// Width of a hex row: offset digits, 16 bytes, 16 glyphs, borders.
fn hex_width(digits: u16) -> u16 {
    digits + 1 + 48 + 1 + 16 + 2
}

/// Hex digits of the offset column for a disk of `size` bytes.
pub fn offset_digits(size: u64) -> u16 {
    if size > 1 << 40 {
        12
    } else if size > 1 << 32 {
        10
    } else {
        8
    }
}

/// Whether all panes fit side by side.
pub fn wide(s: &Shared) -> bool {
    s.width >= 110 && s.height >= 30
}

/// The layout for the current focus.
pub fn areas(s: &Shared) -> Areas {
    layout(s, s.focus)
}

/// The layout as it would be with `focus` (in the narrow layout only the
/// focused pane is on screen).
pub fn layout(s: &Shared, focus: Pane) -> Areas {
    let full = Rect::new(0, 0, s.width, s.height);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(1), Constraint::Length(1)])
        .split(full);
    let (main, bar) = (rows[0], rows[1]);
    if wide(s) {
        let hex_w = hex_width(offset_digits(s.disk_size)).min(main.width.saturating_sub(28));
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Min(28), Constraint::Length(hex_w)])
            .split(main);
        let layers = u16::try_from(s.layers.len()).unwrap_or(u16::MAX);
        let chain_h = layers.saturating_add(2).clamp(3, (main.height / 3).max(3));
        let status_h = if s.is_nbd { 9 } else { 4 };
        let left = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(chain_h),
                Constraint::Length(status_h),
                Constraint::Min(6),
                Constraint::Length(main.height / 4),
            ])
            .split(cols[0]);
        // The tree's slot shows the superblock or the groups while that
        // pane has focus.
        let slot = |p: Pane| (focus == p).then_some(left[2]);
        let (superblock, groups) = (slot(Pane::Superblock), slot(Pane::Groups));
        let tree = (superblock.is_none() && groups.is_none()).then_some(left[2]);
        Areas {
            chain: Some(left[0]),
            status: Some(left[1]),
            tree,
            superblock,
            groups,
            hitmap: Some(left[3]),
            hex: Some(cols[1]),
            tabs: None,
            bar,
        }
    } else {
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(1), Constraint::Min(1)])
            .split(main);
        let body = Some(parts[1]);
        let mut a = Areas {
            chain: None,
            status: None,
            tree: None,
            superblock: None,
            groups: None,
            hex: None,
            hitmap: None,
            tabs: Some(parts[0]),
            bar,
        };
        match focus {
            Pane::Tree => a.tree = body,
            Pane::Superblock => a.superblock = body,
            Pane::Groups => a.groups = body,
            Pane::Chain => a.chain = body,
            Pane::Status => a.status = body,
            Pane::Hex => a.hex = body,
            Pane::HitMap => a.hitmap = body,
        }
        a
    }
}

/// Rows inside `pane`'s frame as it would be laid out with it focused
/// (0 when it has no place at this size).
pub fn inner_rows(s: &Shared, pane: Pane) -> u16 {
    layout(s, pane)
        .of(pane)
        .map_or(0, |r| r.height.saturating_sub(2))
}

/// Cells the hit map shows at the current size (its last row is the
/// legend).
pub fn grid_cells(s: &Shared) -> usize {
    layout(s, Pane::HitMap).hitmap.map_or(0, |r| {
        usize::from(r.width.saturating_sub(2)) * usize::from(r.height.saturating_sub(3))
    })
}
