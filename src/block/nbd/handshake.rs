//! Connecting: the stream to the server (TCP or a unix socket, with time
//! limits) and the handshake up to transmission, fixed newstyle with
//! NBD_OPT_GO and a fallback to NBD_OPT_EXPORT_NAME and oldstyle servers;
//! NBD_OPT_LIST for `layerscope exports`. Every option reply is bounded.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::options::Options;
use super::proto::*;
use super::tls::{TlsMode, TlsOptions};
use super::uri::{NbdUri, Transport};
use crate::block::BlockError;
use crate::bytes::{be16, be32, be64};

/// What the server told us about the export.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportInfo {
    pub name: String,
    pub size: u64,
    pub flags: u16,
    pub block_min: Option<u32>,
    pub block_preferred: Option<u32>,
    pub block_max: Option<u32>,
    pub description: Option<String>,
    pub structured_replies: bool,
    /// Negotiated metadata contexts: (id, name).
    pub meta_contexts: Vec<(u32, String)>,
    /// The handshake used: "newstyle-go", "newstyle-export-name", "oldstyle".
    pub handshake: &'static str,
    /// The connection is encrypted (NBD_OPT_STARTTLS and a TLS handshake).
    pub tls: bool,
    /// Every metadata context the server offers for the export
    /// (NBD_OPT_LIST_META_CONTEXT, asked only with [`MetaQuery::list`]):
    /// `nbdinfo`'s "contexts". `None` when not asked or refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Vec<String>>,
}

/// The metadata contexts to ask for beyond the two every map reads
/// (`base:allocation`, `qemu:allocation-depth`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaQuery {
    /// Further contexts to negotiate, e.g. `qemu:dirty-bitmap:NAME`
    /// (`map --context`).
    pub extra: Vec<String>,
    /// Also list every context the server offers: one more round trip,
    /// so only `nbd-info` asks.
    pub list: bool,
}

impl ExportInfo {
    /// The protocol as libnbd names it (`nbdinfo`'s "protocol"): this
    /// client speaks only fixed newstyle and oldstyle.
    pub fn protocol(&self) -> &'static str {
        if self.handshake == "oldstyle" {
            "oldstyle"
        } else {
            "newstyle-fixed"
        }
    }

    /// The id of a negotiated metadata context.
    pub fn context(&self, name: &str) -> Option<u32> {
        self.meta_contexts
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
    }
}

/// A byte stream to a server.
pub trait Stream: Read + Write + Send {
    /// Sets the time limit on every read and write.
    ///
    /// # Errors
    /// From the socket.
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Stream for UnixStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// Opens a stream to the URI's server.
pub(super) fn dial(uri: &NbdUri, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    match &uri.transport {
        Transport::Tcp { host, port } => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
            for addr in (host.as_str(), *port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        s.set_timeout(timeout)?;
                        return Ok(Box::new(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        Transport::Unix { socket } => {
            let s = UnixStream::connect(socket)?;
            s.set_timeout(timeout)?;
            Ok(Box::new(s))
        }
    }
}

/// Upper bound on replies to one option (a server cannot keep us here).
pub(super) const MAX_REPLIES_PER_OPTION: usize = 4096;

/// Sends an option and collects its replies up to ACK or an error.
fn option(s: &mut dyn Stream, opt: u32, data: &[u8]) -> io::Result<Result<Vec<OptionReply>, u32>> {
    write_option(s, opt, data)?;
    let mut replies = Vec::new();
    for _ in 0..MAX_REPLIES_PER_OPTION {
        let r = OptionReply::read_from(s)?;
        if r.option != opt {
            return Err(invalid(format!(
                "reply to option {} while waiting for option {opt}",
                r.option
            )));
        }
        if r.kind & REP_FLAG_ERROR != 0 {
            return Ok(Err(r.kind));
        }
        if r.kind == REP_ACK {
            return Ok(Ok(replies));
        }
        replies.push(r);
    }
    Err(invalid(format!(
        "more than {MAX_REPLIES_PER_OPTION} replies to option {opt}"
    )))
}

fn name_payload(export: &str) -> io::Result<Vec<u8>> {
    let len = u32::try_from(export.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut d = len.to_be_bytes().to_vec();
    d.extend_from_slice(export.as_bytes());
    Ok(d)
}

/// The whole handshake, up to transmission, with NBD_OPT_STARTTLS first
/// when `tls` asks for it: the stream returned is the one to use (TLS or
/// the plain one).
///
/// # Errors
/// I/O and protocol errors; a server that refuses TLS when it is required,
/// or requires it when it is off; a failed TLS handshake.
pub fn handshake(
    mut s: Box<dyn Stream>,
    export: &str,
    tls: &TlsOptions,
    hostname: &str,
    meta: &MetaQuery,
) -> io::Result<(Box<dyn Stream>, ExportInfo)> {
    let no_zeroes = match greet(s.as_mut())? {
        Greeting::Oldstyle(info) if tls.mode == TlsMode::Require => {
            let _ = info;
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the server speaks the oldstyle protocol, which has no TLS (--tls=require)",
            ));
        }
        Greeting::Oldstyle(info) => return Ok((s, info)),
        Greeting::Newstyle { no_zeroes } => no_zeroes,
    };
    let (mut s, tls_on) = secure(s, tls, hostname)?;
    let mut info = negotiate(s.as_mut(), export, no_zeroes, meta)?;
    info.tls = tls_on;
    Ok((s, info))
}

/// NBD_OPT_STARTTLS and the TLS handshake, as `tls` asks: the stream to
/// go on with, and whether it is encrypted.
fn secure(
    mut s: Box<dyn Stream>,
    tls: &TlsOptions,
    hostname: &str,
) -> io::Result<(Box<dyn Stream>, bool)> {
    if tls.mode == TlsMode::Off {
        return Ok((s, false));
    }
    // Read the configuration before asking, so a bad CA file is reported
    // as such rather than as a server problem.
    let config = tls.client_config()?;
    match option(s.as_mut(), OPT_STARTTLS, &[])? {
        Ok(_) => Ok((super::tls::start(s, config, hostname)?, true)),
        Err(kind) if tls.mode == TlsMode::Require => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "the server does not offer TLS (it answered NBD_OPT_STARTTLS with: {}); \
                 use nbd:// or --tls=off for a plain connection",
                rep_error_name(kind)
            ),
        )),
        Err(_) => Ok((s, false)),
    }
}

/// What the server's greeting said.
enum Greeting {
    /// An oldstyle server: the export's size and flags are already known.
    Oldstyle(ExportInfo),
    /// Fixed newstyle: options follow (we sent our flags).
    Newstyle { no_zeroes: bool },
}

/// Reads the greeting and, for newstyle servers, sends the client flags.
fn greet(s: &mut dyn Stream) -> io::Result<Greeting> {
    let mut b8 = [0u8; 8];
    s.read_exact(&mut b8)?;
    if u64::from_be_bytes(b8) != NBDMAGIC {
        return Err(invalid("not an NBD server (no NBDMAGIC)".into()));
    }
    s.read_exact(&mut b8)?;
    let mut info = ExportInfo::default();
    match u64::from_be_bytes(b8) {
        CLISERV_MAGIC => {
            // Oldstyle: size, flags, 124 bytes of zeros.
            s.read_exact(&mut b8)?;
            info.size = u64::from_be_bytes(b8);
            let mut f = [0u8; 4];
            s.read_exact(&mut f)?;
            // The low 16 bits (the transmission flags).
            info.flags = u16::from_be_bytes([f[2], f[3]]);
            let mut pad = [0u8; 124];
            s.read_exact(&mut pad)?;
            info.handshake = "oldstyle";
            return Ok(Greeting::Oldstyle(info));
        }
        IHAVEOPT => {}
        m => return Err(invalid(format!("unknown handshake magic {m:#x}"))),
    }
    let mut f2 = [0u8; 2];
    s.read_exact(&mut f2)?;
    let server_flags = u16::from_be_bytes(f2);
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(invalid(
            "server does not speak fixed newstyle negotiation".into(),
        ));
    }
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags = CLIENT_FIXED_NEWSTYLE | if no_zeroes { CLIENT_NO_ZEROES } else { 0 };
    s.write_all(&client_flags.to_be_bytes())?;
    Ok(Greeting::Newstyle { no_zeroes })
}

/// The payload of NBD_OPT_SET_META_CONTEXT: the export and the queries.
fn meta_queries(export: &str, queries: &[&str]) -> io::Result<Vec<u8>> {
    let mut d = name_payload(export)?;
    let count = u32::try_from(queries.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    d.extend_from_slice(&count.to_be_bytes());
    for q in queries {
        let len = u32::try_from(q.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    Ok(d)
}

/// The (id, name) of each NBD_REP_META_CONTEXT reply.
fn context_names(replies: &[OptionReply]) -> impl Iterator<Item = (u32, String)> + '_ {
    replies
        .iter()
        .filter(|r| r.kind == REP_META_CONTEXT)
        .filter_map(|r| {
            let id = be32(&r.data, 0)?;
            let name = r.data.get(4..)?;
            Some((id, String::from_utf8_lossy(name).into_owned()))
        })
}

/// The options after the greeting (and after STARTTLS): structured
/// replies, metadata contexts, NBD_OPT_GO (or the old EXPORT_NAME).
fn negotiate(
    s: &mut dyn Stream,
    export: &str,
    no_zeroes: bool,
    meta: &MetaQuery,
) -> io::Result<ExportInfo> {
    let mut b8 = [0u8; 8];
    let mut f2 = [0u8; 2];
    let mut info = ExportInfo {
        name: export.to_owned(),
        ..ExportInfo::default()
    };
    info.structured_replies = option(s, OPT_STRUCTURED_REPLY, &[])?.is_ok();
    if info.structured_replies {
        if meta.list {
            // No queries: the server lists every context it has.
            let mut d = name_payload(export)?;
            d.extend_from_slice(&0u32.to_be_bytes());
            if let Ok(replies) = option(s, OPT_LIST_META_CONTEXT, &d)? {
                info.contexts = Some(context_names(&replies).map(|(_, n)| n).collect());
            }
        }
        let mut queries: Vec<&str> = vec!["base:allocation", "qemu:allocation-depth"];
        for q in &meta.extra {
            if !queries.contains(&q.as_str()) {
                queries.push(q);
            }
        }
        let d = meta_queries(export, &queries)?;
        if let Ok(replies) = option(s, OPT_SET_META_CONTEXT, &d)? {
            info.meta_contexts.extend(context_names(&replies));
        }
    }
    let mut d = name_payload(export)?;
    // Servers send NBD_INFO_EXPORT anyway; the rest only when asked.
    d.extend_from_slice(&2u16.to_be_bytes());
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d.extend_from_slice(&INFO_DESCRIPTION.to_be_bytes());
    match option(s, OPT_GO, &d)? {
        Ok(replies) => {
            let mut have_export = false;
            for r in replies
                .iter()
                .filter(|r| r.kind == REP_INFO && r.data.len() >= 2)
            {
                let (Some(t), Some(p)) = (be16(&r.data, 0), r.data.get(2..)) else {
                    continue;
                };
                match t {
                    INFO_EXPORT if p.len() >= 10 => {
                        info.size = be64(p, 0).unwrap_or(0);
                        info.flags = be16(p, 8).unwrap_or(0);
                        have_export = true;
                    }
                    INFO_BLOCK_SIZE if p.len() >= 12 => {
                        info.block_min = be32(p, 0);
                        info.block_preferred = be32(p, 4);
                        info.block_max = be32(p, 8);
                    }
                    INFO_DESCRIPTION => {
                        info.description = Some(String::from_utf8_lossy(p).into_owned())
                    }
                    _ => {}
                }
            }
            if !have_export {
                return Err(invalid(
                    "NBD_OPT_GO succeeded without NBD_INFO_EXPORT".into(),
                ));
            }
            info.handshake = "newstyle-go";
        }
        Err(kind) if kind == REP_FLAG_ERROR | 1 => {
            // NBD_REP_ERR_UNSUP: an old server. NBD_OPT_EXPORT_NAME has no
            // error reply: a bad name just closes the connection.
            write_option(s, OPT_EXPORT_NAME, export.as_bytes())?;
            s.read_exact(&mut b8)?;
            info.size = u64::from_be_bytes(b8);
            s.read_exact(&mut f2)?;
            info.flags = u16::from_be_bytes(f2);
            if !no_zeroes {
                let mut pad = [0u8; 124];
                s.read_exact(&mut pad)?;
            }
            info.handshake = "newstyle-export-name";
        }
        Err(kind) if kind == REP_ERR_TLS_REQD => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the server requires TLS: use nbds:// (or --tls=require) with \
                 --tls-certificates DIR holding its CA's ca-cert.pem",
            ))
        }
        Err(kind) => {
            return Err(io::Error::other(format!(
                "server refused export {export:?}: {}",
                rep_error_name(kind)
            )))
        }
    }
    Ok(info)
}

/// Asks the server for its exports (NBD_OPT_LIST): (name, description).
///
/// # Errors
/// Connection and protocol errors.
pub fn list_exports(uri: &NbdUri, opts: &Options) -> Result<Vec<(String, String)>, BlockError> {
    let name = uri.to_string();
    let io_err = |e: io::Error| BlockError::Connect {
        uri: name.clone(),
        source: e,
    };
    let stream = dial(uri, opts.connect_timeout).map_err(io_err)?;
    // The whole exchange within connect_timeout, however it trickles.
    let mut timed = super::deadline::Timed::new(stream, opts.connect_timeout);
    timed.start(Some(opts.connect_timeout));
    let mut s: Box<dyn Stream> = Box::new(timed);
    if let Greeting::Oldstyle(_) = greet(s.as_mut()).map_err(io_err)? {
        return Err(io_err(invalid(
            "server does not support listing (no newstyle)".into(),
        )));
    }
    let tls = opts.tls_for(uri);
    let (mut s, _) = secure(s, &tls, &uri.tls_hostname()).map_err(io_err)?;
    let replies = option(s.as_mut(), OPT_LIST, &[])
        .map_err(io_err)?
        .map_err(|k| {
            BlockError::unsupported(&name, format!("listing exports: {}", rep_error_name(k)))
        })?;
    let _ = write_option(s.as_mut(), OPT_ABORT, &[]);
    Ok(replies
        .iter()
        .filter(|r| r.kind == REP_SERVER && r.data.len() >= 4)
        .filter_map(|r| {
            let n = crate::bytes::us(be32(&r.data, 0)?);
            let rest = r.data.get(4..)?;
            let (name, desc) = (rest.get(..n)?, rest.get(n..)?);
            Some((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(desc).into_owned(),
            ))
        })
        .collect())
}
