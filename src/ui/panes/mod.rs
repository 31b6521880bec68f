//! The panes, one struct each owning its state, its drawing and its keys
//! (the shape gitui's components have). A pane reads the [`Shared`] state,
//! answers keys and worker replies with [`Effect`]s, and draws itself into
//! the area the layout gives it. Panes never reach into one another: what
//! one needs of another goes through the app as an effect or as an
//! argument.
//!
//! [`Shared`]: super::context::Shared
//! [`Effect`]: super::context::Effect
pub mod chain;
pub mod changes;
pub mod groups;
pub mod hex;
pub mod hitmap;
pub mod status;
pub mod superblock;
pub mod tree;
pub mod volumes;

mod restore;
mod reveal;

use super::action::Pane;
use super::context::Shared;
use super::style::Styles;

/// What every pane's drawing reads.
#[derive(Clone, Copy)]
pub struct DrawCx<'a> {
    pub shared: &'a Shared,
    pub styles: Styles,
}

impl DrawCx<'_> {
    /// Whether `pane` has the focus.
    pub fn focused(&self, pane: Pane) -> bool {
        self.shared.focus == pane
    }
}
