//! Where each pane goes for a terminal size: a pure function of the
//! [`Shared`] state, used by drawing, by the mouse (which pane is under
//! the pointer) and by the panes themselves (how many rows a page is).
//!
//! Full (from 160x45), every pane on screen at once:
//!
//! ```text
//! ┌Chain─────────┐┌Tree──────────────┐┌Hex─────────────────────────────┐
//! │▶2 top.qcow2  ││▾ /               ││00000400 53 ef 01 00 …  S⋄•⋄     │
//! ├Status────────┤│  ▸ etc        21 ││…                               │
//! ├Volumes───────┤│                  ││                                │
//! ├Superblock────┤├Groups────────────┤│                                │
//! │0x0438 s_magic││group checksum …  │├Hit map─────────────────────────┤
//! └──────────────┘└──────────────────┘└────────────────────────────────┘
//!  q quit  ? help  Tab pane  …                             [message]
//! ```
//!
//! Medium (from 110x30): a tab strip (every pane, those not on screen
//! dimmed), then chain, status, a shared slot and the hit map on the left,
//! the hex view on the right; the slot shows the tree, or the superblock,
//! groups or volumes while one of those has the focus.
//!
//! Narrow (below, down to 80x24): the tab strip and the focused pane full
//! size (Hex first); Tab, a digit or a click brings in the others.
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
    pub volumes: Option<Rect>,
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
            Pane::Volumes => self.volumes,
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

/// Rows the Status pane shows over NBD (state, export, flags, block
/// sizes, contexts, server layers, traffic, latency, errors).
const NBD_STATUS_ROWS: u16 = 12;

/// Width of a hex row: offset digits, 16 bytes, 16 glyphs, borders.
fn hex_width(digits: u16) -> u16 {
    digits.saturating_add(1 + 48 + 1 + 16 + 2)
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

/// How much fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One pane at a time, with tabs.
    Narrow,
    /// Hex, chain, status, hit map and one of tree/superblock/groups.
    Medium,
    /// Every pane.
    Full,
}

/// The layout mode for the terminal's size.
pub fn mode(s: &Shared) -> Mode {
    if s.width >= 160 && s.height >= 45 {
        Mode::Full
    } else if s.width >= 110 && s.height >= 30 {
        Mode::Medium
    } else {
        Mode::Narrow
    }
}

/// The layout for the current focus.
pub fn areas(s: &Shared) -> Areas {
    layout(s, s.focus)
}

/// `r` split by `N` constraints: an array, so taking its parts by a
/// constant index cannot panic.
fn split<const N: usize>(r: Rect, dir: Direction, c: [Constraint; N]) -> [Rect; N] {
    Layout::default().direction(dir).constraints(c).areas(r)
}

/// The layout as it would be with `focus` (in the narrow layout only the
/// focused pane is on screen, in the medium one the tree's slot follows
/// the focus).
pub fn layout(s: &Shared, focus: Pane) -> Areas {
    let full = Rect::new(0, 0, s.width, s.height);
    let rows = split(
        full,
        Direction::Vertical,
        [Constraint::Min(1), Constraint::Length(1)],
    );
    let (main, bar) = (rows[0], rows[1]);
    let mut a = Areas {
        chain: None,
        status: None,
        tree: None,
        superblock: None,
        groups: None,
        hex: None,
        hitmap: None,
        volumes: None,
        tabs: None,
        bar,
    };
    let hex_w = hex_width(offset_digits(s.disk_size));
    let layers = u16::try_from(s.layers.len()).unwrap_or(u16::MAX);
    // The journal's line (two rows where the pane is narrow).
    let journal_h = if s.journal_note { 2 } else { 0 };
    let status_h = if s.is_nbd || s.is_ssh {
        (NBD_STATUS_ROWS + 2).saturating_add(journal_h)
    } else {
        journal_h.saturating_add(4)
    };
    match mode(s) {
        Mode::Full => {
            let rest = main.width.saturating_sub(hex_w);
            // The left column at least as wide as the superblock's names
            // and raw values (their meanings go on under them).
            let left_w = (rest.saturating_mul(2) / 5).clamp(40, 60);
            let cols = split(
                main,
                Direction::Horizontal,
                [
                    Constraint::Length(left_w),
                    Constraint::Min(30),
                    Constraint::Length(hex_w),
                ],
            );
            let chain_h = layers.saturating_add(2).clamp(3, main.height / 4);
            let volumes_h = s.volume_rows.saturating_add(2).clamp(3, main.height / 5);
            let left = split(
                cols[0],
                Direction::Vertical,
                [
                    Constraint::Length(chain_h),
                    Constraint::Length(status_h),
                    Constraint::Length(volumes_h),
                    Constraint::Min(6),
                ],
            );
            let middle = split(
                cols[1],
                Direction::Vertical,
                [Constraint::Percentage(60), Constraint::Min(8)],
            );
            let right = split(
                cols[2],
                Direction::Vertical,
                [
                    Constraint::Min(10),
                    Constraint::Length((main.height / 4).max(8)),
                ],
            );
            a.chain = Some(left[0]);
            a.status = Some(left[1]);
            a.volumes = Some(left[2]);
            a.superblock = Some(left[3]);
            a.tree = Some(middle[0]);
            a.groups = Some(middle[1]);
            a.hex = Some(right[0]);
            a.hitmap = Some(right[1]);
        }
        Mode::Medium => {
            let parts = split(
                main,
                Direction::Vertical,
                [Constraint::Length(1), Constraint::Min(1)],
            );
            a.tabs = Some(parts[0]);
            let body = parts[1];
            let hex_w = hex_w.min(body.width.saturating_sub(28));
            let cols = split(
                body,
                Direction::Horizontal,
                [Constraint::Min(28), Constraint::Length(hex_w)],
            );
            let chain_h = layers.saturating_add(2).clamp(3, (body.height / 3).max(3));
            let left = split(
                cols[0],
                Direction::Vertical,
                [
                    Constraint::Length(chain_h),
                    Constraint::Length(status_h),
                    Constraint::Min(6),
                    Constraint::Length(body.height / 4),
                ],
            );
            // The tree's slot shows the superblock or the groups while that
            // pane has focus.
            match focus {
                Pane::Superblock => a.superblock = Some(left[2]),
                Pane::Groups => a.groups = Some(left[2]),
                Pane::Volumes => a.volumes = Some(left[2]),
                _ => a.tree = Some(left[2]),
            }
            a.chain = Some(left[0]);
            a.status = Some(left[1]);
            a.hitmap = Some(left[3]);
            a.hex = Some(cols[1]);
        }
        Mode::Narrow => {
            let parts = split(
                main,
                Direction::Vertical,
                [Constraint::Length(1), Constraint::Min(1)],
            );
            a.tabs = Some(parts[0]);
            let body = Some(parts[1]);
            match focus {
                Pane::Tree => a.tree = body,
                Pane::Superblock => a.superblock = body,
                Pane::Groups => a.groups = body,
                Pane::Chain => a.chain = body,
                Pane::Status => a.status = body,
                Pane::Hex => a.hex = body,
                Pane::HitMap => a.hitmap = body,
                Pane::Volumes => a.volumes = body,
            }
        }
    }
    a
}

/// Rows inside `pane`'s frame as it would be laid out with it focused
/// (0 when it has no place at this size).
pub fn inner_rows(s: &Shared, pane: Pane) -> u16 {
    layout(s, pane)
        .of(pane)
        .map_or(0, |r| r.height.saturating_sub(2))
}

/// Rows the hit map's legend takes in a pane `width` columns inside: an
/// entry per layer (`█2:448.0 KiB`), one for bytes in no layer, one for
/// the opened file, wrapped.
pub fn legend_rows(s: &Shared, width: u16) -> u16 {
    let entries = s.layers.len().saturating_add(2);
    let chars = entries.saturating_mul(15);
    let rows = chars.div_ceil(usize::from(width.max(1)));
    u16::try_from(rows).unwrap_or(u16::MAX).clamp(1, 3)
}

/// The hit map's grid at the current size: (columns, rows); its last rows
/// are the legend's.
pub fn grid_shape(s: &Shared) -> (usize, usize) {
    layout(s, Pane::HitMap).hitmap.map_or((0, 0), |r| {
        let w = r.width.saturating_sub(2);
        let h = r.height.saturating_sub(2).saturating_sub(legend_rows(s, w));
        (usize::from(w), usize::from(h))
    })
}

/// Cells the hit map shows at the current size.
pub fn grid_cells(s: &Shared) -> usize {
    let (w, h) = grid_shape(s);
    w.saturating_mul(h)
}

/// The tab strip's labels and where each lies (x range) in a strip of
/// `width` columns: `1 Chain`, `2 Tree`, … with the digit that focuses the
/// pane when they fit, plain names when not.
pub fn tabs(width: u16) -> Vec<(Pane, String, u16, u16)> {
    let with_digits: Vec<String> = Pane::ORDER
        .iter()
        .enumerate()
        .map(|(i, p)| format!(" {} {} ", i.saturating_add(1), p.name()))
        .collect();
    let total: usize = with_digits.iter().map(|l| l.chars().count()).sum();
    let labels = if total <= usize::from(width) {
        with_digits
    } else {
        Pane::ORDER
            .iter()
            .map(|p| format!(" {} ", p.name()))
            .collect()
    };
    let mut x = 0u16;
    Pane::ORDER
        .iter()
        .zip(labels)
        .map(|(p, l)| {
            let w = u16::try_from(l.chars().count()).unwrap_or(u16::MAX);
            let at = x;
            x = x.saturating_add(w);
            (*p, l, at, x)
        })
        .collect()
}
