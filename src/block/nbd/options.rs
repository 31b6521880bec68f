//! The NBD client's settings ([`Options`]): time limits, how many
//! requests go out at once and how large, reconnection, TLS, multi-conn
//! connection counts and the metadata contexts to ask for, with their
//! defaults. The client and the handshake read them; nothing here
//! connects.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::time::Duration;

use super::uri::NbdUri;

/// Connection settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Limit on connecting and on the whole handshake.
    pub connect_timeout: Duration,
    /// Limit on any single socket read or write during transmission.
    pub request_timeout: Duration,
    /// Limit on one whole operation (a read, a block status walk step),
    /// however its bytes trickle in: a server sending one byte a second
    /// never trips `request_timeout`.
    pub operation_timeout: Duration,
    /// Read requests sent before waiting for replies.
    pub max_in_flight: usize,
    /// Largest single read request (further capped by the server's maximum
    /// block size).
    pub max_request: u32,
    /// Reconnection attempts per failed request.
    pub reconnect_attempts: u32,
    /// TLS: `None` follows the URI (`nbds://` requires it, `nbd://` does
    /// not use it).
    pub tls: Option<super::tls::TlsMode>,
    /// The `tls-certificates` directory (overrides the URI's).
    pub tls_certificates: Option<std::path::PathBuf>,
    /// Connections for bulk reads when the server allows multi-conn.
    pub connections: usize,
    /// Connections for a large batch of scattered reads (a metadata walk)
    /// when the server allows multi-conn and `connections` is above 1: a
    /// scattered read is waiting, not streaming, and servers answer a
    /// few requests at a time per connection (qemu-nbd and nbdkit 16).
    pub walk_connections: usize,
    /// Metadata contexts beyond the two every map reads, and whether to
    /// list what the server offers.
    pub meta: super::handshake::MetaQuery,
    /// The command walks a tree (`ls -R`): the connections its batches
    /// spread over start opening with the export probe's round, not at
    /// the first batch, which would otherwise wait for their handshakes.
    pub walk_ahead: bool,
}

impl Options {
    /// The TLS settings for `uri`: these options over the URI's.
    pub fn tls_for(&self, uri: &NbdUri) -> super::tls::TlsOptions {
        use super::tls::TlsMode;
        super::tls::TlsOptions {
            mode: self.tls.unwrap_or(if uri.tls {
                TlsMode::Require
            } else {
                TlsMode::Off
            }),
            certificates: self
                .tls_certificates
                .clone()
                .or_else(|| uri.tls_certificates.as_ref().map(Into::into)),
            hostname: uri.tls_hostname.clone(),
            psk_file: uri.tls_psk_file.as_ref().map(Into::into),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
            max_in_flight: 16,
            max_request: 256 << 10,
            reconnect_attempts: 3,
            tls: None,
            tls_certificates: None,
            connections: 4,
            walk_connections: 16,
            meta: super::handshake::MetaQuery::default(),
            walk_ahead: false,
        }
    }
}
