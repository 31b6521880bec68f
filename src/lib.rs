//! layerscope: an explorer for disk images built from layers.
//!
//! The crate is a library with a thin binary (`src/main.rs`), so tests and
//! users drive the same code the CLI runs:
//!
//! - [`block`]: block sources (raw files, qcow2 layers) behind one trait, the
//!   backing chain, and the layered reader that records which layer served
//!   every read.
//! - [`cli`]: the scripting commands (`chain`, `map`, `read`, …).
#![forbid(unsafe_code)]

pub mod block;
pub mod check;
pub mod cli;
pub mod demo;
pub mod diff;
pub mod escape;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
pub mod ui;
pub mod units;
pub mod volume;
