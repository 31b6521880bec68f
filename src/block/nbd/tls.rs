//! NBD over TLS: the STARTTLS option of the handshake and an X.509 client
//! built on rustls (ring), verifying the server against a CA.
//!
//! Certificates are found like libnbd finds them: a `tls-certificates`
//! directory holding `ca-cert.pem` (and, for servers that verify clients,
//! `client-cert.pem` and `client-key.pem`); without one, libnbd's default
//! directories (`$HOME/.pki/libnbd`, `/etc/pki/libnbd`), then the system's
//! CA bundle. TLS pre-shared keys (nbdkit `--tls-psk`) are refused with a
//! clear message: rustls has no external-PSK support, and no other
//! pure-Rust TLS library that is maintained as carefully does.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::handshake::Stream;

/// Whether to use TLS (`--tls`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connections only (the default for `nbd://`).
    #[default]
    Off,
    /// TLS when the server offers it, plain otherwise (no protection
    /// against an attacker who strips it: like libnbd's `tls=allow`).
    Prefer,
    /// TLS or nothing (the default for `nbds://`).
    Require,
}

/// TLS settings of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: TlsMode,
    /// The `tls-certificates` directory.
    pub certificates: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host;
    /// `localhost` for unix sockets).
    pub hostname: Option<String>,
    /// A PSK file (`tls-psk-file`): refused, see the module's note.
    pub psk_file: Option<PathBuf>,
}

/// The CA file in a certificates directory.
const CA: &str = "ca-cert.pem";
const CLIENT_CERT: &str = "client-cert.pem";
const CLIENT_KEY: &str = "client-key.pem";

/// The system bundle used when no directory has `ca-cert.pem`.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl TlsOptions {
    /// The directory to read certificates from: the one given, else the
    /// first of libnbd's defaults that has `ca-cert.pem`.
    fn directory(&self) -> Option<PathBuf> {
        if let Some(d) = &self.certificates {
            return Some(d.clone());
        }
        let mut dirs = Vec::new();
        if let Some(home) = std::env::var_os("HOME") {
            dirs.push(Path::new(&home).join(".pki/libnbd"));
        }
        dirs.push(PathBuf::from("/etc/pki/libnbd"));
        dirs.into_iter().find(|d| d.join(CA).is_file())
    }

    /// The rustls client configuration: the CA, and a client certificate
    /// when the directory has one.
    ///
    /// # Errors
    /// Unreadable or invalid PEM files (naming them), a PSK request.
    pub fn client_config(&self) -> io::Result<Arc<ClientConfig>> {
        if let Some(p) = &self.psk_file {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: TLS with a pre-shared key is not supported (rustls, the TLS library \
                     layerscope uses, has no external PSK); give the server X.509 certificates \
                     (nbdkit --tls-certificates=DIR)",
                    p.display()
                ),
            ));
        }
        let dir = self.directory();
        let ca = dir
            .as_ref()
            .map(|d| d.join(CA))
            .unwrap_or_else(|| PathBuf::from(SYSTEM_BUNDLE));
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&ca).map_err(|e| pem_error(&ca, &e))?;
        for cert in certs {
            let cert = cert.map_err(|e| pem_error(&ca, &e))?;
            roots.add(cert).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", ca.display()))
            })?;
        }
        if roots.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no CA certificate in it", ca.display()),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots);
        let client = dir
            .map(|d| (d.join(CLIENT_CERT), d.join(CLIENT_KEY)))
            .filter(|(c, k)| c.is_file() && k.is_file());
        let config = match client {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(&cert)
                    .map_err(|e| pem_error(&cert, &e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| pem_error(&cert, &e))?;
                let key_der =
                    PrivateKeyDer::from_pem_file(&key).map_err(|e| pem_error(&key, &e))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} / {}: {e}", cert.display(), key.display()),
                    )
                })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

fn pem_error(path: &Path, e: &rustls::pki_types::pem::Error) -> io::Error {
    let kind = match e {
        rustls::pki_types::pem::Error::Io(io) => io.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, format!("{}: {e}", path.display()))
}

/// A TLS session over a stream to the server.
pub struct TlsStream {
    inner: StreamOwned<ClientConnection, Box<dyn Stream>>,
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Stream for TlsStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.inner.sock.set_timeout(t)
    }
}

/// Runs the TLS handshake on `sock` (after the server acknowledged
/// NBD_OPT_STARTTLS) and returns the encrypted stream. The handshake is
/// completed here, so a bad certificate is reported now, in words.
///
/// # Errors
/// The handshake's failure: an unknown CA, a name mismatch, an alert from
/// the server (it refused our certificate), a timeout.
pub fn start(
    sock: Box<dyn Stream>,
    config: Arc<ClientConfig>,
    hostname: &str,
) -> io::Result<Box<dyn Stream>> {
    let name = ServerName::try_from(hostname.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{hostname:?} is not a host name TLS can verify: {e}"),
        )
    })?;
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| explain(e, hostname))?;
    }
    Ok(Box::new(TlsStream { inner: s }))
}

/// Says in words why a handshake failed.
fn explain(e: io::Error, hostname: &str) -> io::Error {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return io::Error::new(e.kind(), format!("TLS handshake: {e}"));
    };
    let what = match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (check ca-cert.pem in the \
             tls-certificates directory)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => format!("the server's certificate is not valid for {hostname:?}"),
        rustls::Error::InvalidCertificate(c) => {
            format!("the server's certificate is invalid: {c:?}")
        }
        rustls::Error::AlertReceived(a) => format!(
            "the server refused the TLS handshake ({a:?}; a server that verifies clients needs \
             client-cert.pem and client-key.pem in the tls-certificates directory)"
        ),
        other => other.to_string(),
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TLS handshake failed: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_and_missing_ca_are_refused_in_words() {
        let psk = TlsOptions {
            mode: TlsMode::Require,
            psk_file: Some("/k.psk".into()),
            ..TlsOptions::default()
        };
        let e = psk.client_config().unwrap_err();
        assert!(e.to_string().contains("pre-shared key"), "{e}");
        let dir = TlsOptions {
            mode: TlsMode::Require,
            certificates: Some("/nonexistent-dir".into()),
            ..TlsOptions::default()
        };
        let e = dir.client_config().unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent-dir/ca-cert.pem"),
            "{e}"
        );
    }
}
