//! Images on another host over the user's own `ssh` and its SFTP
//! subsystem: `ssh://[user@]host[:port]/path/to/top.qcow2`. Nothing is
//! installed on the host beyond sshd; `~/.ssh/config`, the agent,
//! known_hosts, ProxyJump and ControlMaster apply because `ssh` itself
//! makes the connection (`LAYERSCOPE_SSH_COMMAND` replaces its command
//! line, like git's `GIT_SSH_COMMAND`).
//!
//! `proto` holds the SFTP v3 wire format, `link` one ssh process and its
//! reply routing, `client` the session (deadlines, pipelined reads,
//! reconnection, counters), `storage` the files as [`Storage`] and the
//! chain [`Opener`]. Files are opened with SSH_FXF_READ only.
//!
//! [`Storage`]: crate::block::storage::Storage
//! [`Opener`]: crate::block::chain::Opener
// Disk and server data must never panic or wrap (issue 11): these lints
// are denied here as in src/fs; an `allow` names the bound that makes it
// safe. Tests may index their fixtures.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
pub mod client;
pub mod link;
pub mod proto;
pub mod share;
pub mod storage;
pub mod uri;

use std::sync::Arc;

pub use client::{Options, Session, SshStatus};
pub use storage::SshOpener;
pub use uri::{is_ssh_uri, SshUri, SSH_COMMAND_ENV};

use crate::block::chain::{open_chain, Chain, ChainOptions};
use crate::block::BlockError;

/// Opens the chain whose top image is named by the `ssh://` URI `text`:
/// one ssh session for every layer, backing files resolved on the host.
///
/// # Errors
/// A bad URI, ssh failing to connect (with what it said), and every error
/// of [`open_chain`], naming the remote file.
pub fn open_ssh_chain(text: &str, chain: ChainOptions, opts: Options) -> Result<Chain, BlockError> {
    let uri = SshUri::parse(text).map_err(|why| BlockError::Open {
        path: text.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
    })?;
    let session = Session::connect(&uri, opts).map_err(|e| BlockError::Connect {
        uri: uri.authority(),
        source: e,
    })?;
    let opener = SshOpener::new(session);
    open_chain(&uri.to_string(), chain, &opener)
}

/// The ssh session a chain is read through, if any (for the status pane).
pub fn session_of(chain: &Chain) -> Option<Arc<Session>> {
    chain
        .layers
        .iter()
        .find_map(|l| l.storage.as_ref().and_then(|s| s.ssh_session()))
}
