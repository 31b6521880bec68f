//! An NBD client of our own, read-only, speaking the current protocol:
//! fixed newstyle handshake, NBD_OPT_GO with export and block-size info,
//! structured replies, metadata contexts (`base:allocation`,
//! `qemu:allocation-depth`), block status, pipelined reads.
//!
//! Why not the `nbd` crate: its client knows only the old
//! NBD_OPT_EXPORT_NAME handshake and simple replies. Its server is a test
//! fixture instead, for this client's fallback to that handshake.
pub mod block_status;
mod cache;
pub mod client;
mod conn;
pub mod deadline;
pub mod handshake;
pub mod known;
pub mod map;
mod multi_conn;
pub mod options;
mod pipeline;
pub mod proto;
pub mod recent;
pub mod status;
mod status_ahead;
pub mod tls;
pub mod uri;

pub use client::{list_exports, ExportInfo, NbdClient, Options};
pub use handshake::MetaQuery;
pub use tls::{TlsMode, TlsOptions};
pub use uri::{is_nbd_uri, NbdUri};
