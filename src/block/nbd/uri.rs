//! NBD URIs as libnbd and qemu spell them:
//! `nbd://host[:port][/export]` and `nbd+unix:///[export]?socket=PATH`,
//! and their TLS forms `nbds://` and `nbds+unix://` with libnbd's
//! `tls-certificates`, `tls-hostname` and `tls-psk-file` query parameters.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::fmt;

use crate::block::percent;

/// Where an NBD server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp { host: String, port: u16 },
    Unix { socket: String },
}

/// A parsed NBD URI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NbdUri {
    pub transport: Transport,
    /// The export name ("" is the default export).
    pub export: String,
    /// `nbds://`: TLS is required.
    pub tls: bool,
    /// `?tls-certificates=DIR`.
    pub tls_certificates: Option<String>,
    /// `?tls-hostname=NAME`: the name the server's certificate must carry.
    pub tls_hostname: Option<String>,
    /// `?tls-psk-file=FILE`.
    pub tls_psk_file: Option<String>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport::Unix {
            socket: String::new(),
        }
    }
}

/// The IANA port for NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// True when `text` looks like an NBD URI (so it is not a file path).
pub fn is_nbd_uri(text: &str) -> bool {
    [
        "nbd://",
        "nbd+unix://",
        "nbds://",
        "nbds+unix://",
        "nbd+vsock://",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

impl NbdUri {
    /// Parses a URI.
    ///
    /// # Errors
    /// A message saying what is wrong (TLS and vsock are not supported).
    pub fn parse(text: &str) -> Result<NbdUri, String> {
        let mut uri = Self::parse_plain(text)?;
        let bad = |why: &str| format!("{text:?}: {why}");
        uri.tls = text.starts_with("nbds");
        let query = text.split_once('?').map_or("", |(_, q)| q);
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent::decode(v).map_err(|e| bad(&e))?;
            match k {
                "tls-certificates" => uri.tls_certificates = Some(v),
                "tls-hostname" => uri.tls_hostname = Some(v),
                "tls-psk-file" => uri.tls_psk_file = Some(v),
                _ => {}
            }
        }
        Ok(uri)
    }

    /// The name a TLS server's certificate must carry: `tls-hostname`, the
    /// host, or `localhost` for a unix socket (as libnbd does).
    pub fn tls_hostname(&self) -> String {
        if let Some(h) = &self.tls_hostname {
            return h.clone();
        }
        match &self.transport {
            Transport::Tcp { host, .. } => host.clone(),
            Transport::Unix { .. } => "localhost".to_owned(),
        }
    }

    fn parse_plain(original: &str) -> Result<NbdUri, String> {
        let bad = |why: &str| format!("{original:?}: {why}");
        let plain;
        let text = match original.strip_prefix("nbds") {
            Some(rest) => {
                plain = format!("nbd{rest}");
                plain.as_str()
            }
            None => original,
        };
        if let Some(rest) = text.strip_prefix("nbd+unix://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !path.is_empty() && !path.starts_with('/') {
                return Err(bad(
                    "nbd+unix:// takes no host: write nbd+unix:///export?socket=PATH",
                ));
            }
            let socket = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("socket="))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("missing ?socket=PATH"))?;
            return Ok(NbdUri {
                transport: Transport::Unix {
                    socket: percent::decode(socket).map_err(|e| bad(&e))?,
                },
                export: percent::decode(path.trim_start_matches('/')).map_err(|e| bad(&e))?,
                ..NbdUri::default()
            });
        }
        if let Some(rest) = text.strip_prefix("nbd://") {
            let (authority, path) = match rest.find(['/', '?']) {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let path = path.split('?').next().unwrap_or("");
            let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("unclosed [ in host"))?;
                (h.to_owned(), after.strip_prefix(':'))
            } else {
                match authority.rsplit_once(':') {
                    Some((h, p)) => (h.to_owned(), Some(p)),
                    None => (authority.to_owned(), None),
                }
            };
            let host = if host.is_empty() {
                "localhost".to_owned()
            } else {
                host
            };
            let port = match port {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None => DEFAULT_PORT,
            };
            return Ok(NbdUri {
                transport: Transport::Tcp { host, port },
                export: percent::decode(path.strip_prefix('/').unwrap_or(path))
                    .map_err(|e| bad(&e))?,
                ..NbdUri::default()
            });
        }
        Err(bad(
            "not an NBD URI (nbd://host[:port]/export or nbd+unix:///export?socket=PATH)",
        ))
    }
}

/// Written as a URI that [`NbdUri::parse`] (and libnbd) reads back: the
/// export name and socket path are %-escaped where a URI needs it, so
/// spaces, `?`, `#`, `%`, `&` and control characters never appear raw
/// (`nbdinfo` prints `nbd+unix:///disk%20one?socket=…` the same way).
impl fmt::Display for NbdUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let export = percent::encode(&self.export, PATH_KEEP);
        let s = if self.tls { "s" } else { "" };
        match &self.transport {
            Transport::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd{s}://[{host}]:{port}/{export}")
            }
            Transport::Tcp { host, port } => write!(f, "nbd{s}://{host}:{port}/{export}"),
            Transport::Unix { socket } => write!(
                f,
                "nbd{s}+unix:///{export}?socket={}",
                percent::encode(socket, QUERY_KEEP)
            ),
        }
    }
}

/// Characters kept as they are in a path, besides letters, digits and
/// `-._~` (RFC 3986 `pchar` and `/`).
const PATH_KEEP: &str = "/!$&'()*+,;=:@";
/// The same in a query value, less `&` (it separates parameters).
const QUERY_KEEP: &str = "/!$'()*+,;=:@?";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libnbd_uris() {
        let u = NbdUri::parse("nbd+unix:///?socket=/tmp/nbd.sock").unwrap();
        assert_eq!(
            u.transport,
            Transport::Unix {
                socket: "/tmp/nbd.sock".into()
            }
        );
        assert_eq!(u.export, "");
        let u = NbdUri::parse("nbd+unix:///disk%201?socket=/s").unwrap();
        assert_eq!(u.export, "disk 1");
        let u = NbdUri::parse("nbd://127.0.0.1:10810/top").unwrap();
        assert_eq!(
            u.transport,
            Transport::Tcp {
                host: "127.0.0.1".into(),
                port: 10810
            }
        );
        assert_eq!(u.export, "top");
        let u = NbdUri::parse("nbd://[::1]/x").unwrap();
        assert_eq!(
            u.transport,
            Transport::Tcp {
                host: "::1".into(),
                port: DEFAULT_PORT
            }
        );
        assert_eq!(NbdUri::parse("nbd://h").unwrap().export, "");
        let t = NbdUri::parse("nbds://h/x?tls-certificates=/c%20d&tls-hostname=srv").unwrap();
        assert!(t.tls);
        assert_eq!(t.tls_certificates.as_deref(), Some("/c d"));
        assert_eq!(t.tls_hostname(), "srv");
        assert_eq!(t.to_string(), "nbds://h:10809/x");
        let t = NbdUri::parse("nbds+unix:///e?socket=/s").unwrap();
        assert!(t.tls && t.export == "e");
        assert_eq!(t.tls_hostname(), "localhost");
        assert!(!NbdUri::parse("nbd://h/x").unwrap().tls);
        assert!(NbdUri::parse("nbd+unix:///x").is_err());
        assert!(NbdUri::parse("nbd://h:99999/").is_err());
        assert!(is_nbd_uri("nbd+unix:///?socket=s"));
        assert!(!is_nbd_uri("./nbd:x"));
    }

    #[test]
    fn prints_uris_that_parse_back() {
        for text in [
            "nbd+unix:///disk%20one?socket=/tmp/a%20b/s.sock",
            "nbd+unix:///?socket=/s%26t",
            "nbd://127.0.0.1:10810/a%3Fb%23c%25d%1B",
            "nbd://[::1]:10809/x/y",
        ] {
            let u = NbdUri::parse(text).unwrap();
            assert_eq!(u.to_string(), text);
            assert_eq!(NbdUri::parse(&u.to_string()).unwrap(), u);
        }
        assert_eq!(
            NbdUri::parse("nbd+unix:///a%3Fb?socket=/s").unwrap().export,
            "a?b"
        );
    }
}
