//! layerscope: an explorer for disk images built from layers.
//!
//! The crate is a library with a thin binary (`src/main.rs`), so tests and
//! users drive the same code the CLI runs:
//!
//! - [`block`]: block sources (raw files, qcow2 layers) behind one trait, the
//!   backing chain, and the layered reader that records which layer served
//!   every read.
//! - [`cli`]: the scripting commands (`chain`, `map`, `read`, …).
//!
//! # Example
//!
//! A frame of the terminal UI as text (the README's example, kept equal
//! to it by a test):
//!
//! ```rust
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
//!
//! // The image and its backing files, read-only (layerscope::demo::open() is the demo).
//! let chain = open_chain("assets/demo/top.qcow2", ChainOptions::default(), &FsOpener)?;
//! let frame = layerscope::ui::render_frame(chain, 80, 24, "g 0x400 Enter", false);
//! assert_eq!(frame.lines().count(), 24);
//! // insta::assert_snapshot!(frame);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
// Disk and server data reach almost every function; a panic on it is a bug
// (issue 11). Outside tests, the few panics on the crate's own invariants
// say so where they stand.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod block;
pub mod bytes;
pub mod check;
pub mod cli;
pub mod demo;
pub mod diff;
pub mod escape;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
mod lazy_lru;
pub mod ui;
pub mod units;
pub mod volume;
