//! The NBD wire protocol: constants and the structures layerscope sends and
//! receives, each with the sentence of the specification it implements
//! (`doc/proto.md` of the NBD project). Encoding and decoding only: no
//! sockets, no state. Everything is big-endian ("network byte order").
//!
//! Only the read-only subset exists here: there is no way to encode WRITE,
//! TRIM or WRITE_ZEROES, so the client cannot send them by mistake.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io::{self, Read, Write};

/// "The server sends the string NBDMAGIC…"
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "…followed by IHAVEOPT" (newstyle negotiation).
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The oldstyle magic that follows NBDMAGIC on servers that predate options.
pub const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
/// "The server replies to options with this magic."
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Transmission: request, simple reply and structured reply magics.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
/// "NBD_OPT_STARTTLS (5): The client wishes to initiate TLS. … The server
/// MUST either reply with NBD_REP_ACK after which point the connection is
/// upgraded to TLS, or an error reply explicitly complying with this
/// document."
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply types. Errors have bit 31 set.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// "NBD_REP_ERR_TLS_REQD (2^31 + 5): The server is unwilling to continue
/// negotiation unless TLS is initiated first."
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;

/// NBD_REP_INFO types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags (from NBD_INFO_EXPORT).
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_ROTATIONAL: u16 = 1 << 4;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TFLAG_SEND_RESIZE: u16 = 1 << 9;
pub const TFLAG_SEND_CACHE: u16 = 1 << 10;
pub const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Names of the transmission flags, for display.
pub const TFLAG_NAMES: &[(u16, &str)] = &[
    (TFLAG_READ_ONLY, "read-only"),
    (TFLAG_SEND_FLUSH, "flush"),
    (TFLAG_SEND_FUA, "fua"),
    (TFLAG_ROTATIONAL, "rotational"),
    (TFLAG_SEND_TRIM, "trim"),
    (TFLAG_SEND_WRITE_ZEROES, "write-zeroes"),
    (TFLAG_SEND_DF, "df"),
    (TFLAG_CAN_MULTI_CONN, "multi-conn"),
    (TFLAG_SEND_RESIZE, "resize"),
    (TFLAG_SEND_CACHE, "cache"),
    (TFLAG_SEND_FAST_ZERO, "fast-zero"),
];

/// Commands layerscope sends (read-only subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    Read = 0,
    Disconnect = 2,
    BlockStatus = 7,
}

impl Command {
    /// The command's number on the wire.
    pub fn code(self) -> u16 {
        match self {
            Command::Read => 0,
            Command::Disconnect => 2,
            Command::BlockStatus => 7,
        }
    }
}

/// Command flags.
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// Structured reply chunk types and flags.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) + 2;

/// `base:allocation` status bits.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// The largest option reply or structured chunk payload we accept that is
/// not read data: the spec's limit for strings is 4 KiB; block status
/// replies are bounded by what we asked for. Anything bigger is hostile.
pub const MAX_OPTION_REPLY: u32 = 64 << 10;

fn be16(r: &mut dyn Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn be32(r: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn be64(r: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// "C: 64 bits, 0x49484156454F5054 (ASCII 'IHAVEOPT') / 32 bits, option /
/// 32 bits, length of option data (unsigned) / any data needed for the
/// chosen option, of length as specified above."
pub fn write_option(w: &mut dyn Write, option: u32, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut buf = Vec::with_capacity(data.len().saturating_add(16));
    buf.extend_from_slice(&IHAVEOPT.to_be_bytes());
    buf.extend_from_slice(&option.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(data);
    w.write_all(&buf)?;
    w.flush()
}

/// "S: 64 bits, 0x3e889045565a9 (magic number for replies) / 32 bits, the
/// option as sent by the client to which this is a reply / 32 bits, reply
/// type / 32 bits, length of the reply … / any data as required."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

impl OptionReply {
    /// Reads one option reply; refuses replies longer than
    /// [`MAX_OPTION_REPLY`].
    ///
    /// # Errors
    /// I/O errors, a bad magic, an oversized length (`InvalidData`).
    pub fn read_from(r: &mut dyn Read) -> io::Result<OptionReply> {
        let magic = be64(r)?;
        if magic != REPLY_MAGIC {
            return Err(invalid(format!(
                "option reply magic {magic:#x}, expected {REPLY_MAGIC:#x}"
            )));
        }
        let option = be32(r)?;
        let kind = be32(r)?;
        let len = be32(r)?;
        if len > MAX_OPTION_REPLY {
            return Err(invalid(format!(
                "option reply of {len} bytes (limit {MAX_OPTION_REPLY})"
            )));
        }
        let mut data = vec![0u8; crate::bytes::us(len)];
        r.read_exact(&mut data)?;
        Ok(OptionReply { option, kind, data })
    }
}

/// "C: 32 bits, 0x25609513, magic / 16 bits, command flags / 16 bits, type
/// / 64 bits, cookie / 64 bits, offset (unsigned) / 32 bits, length
/// (unsigned)."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: Command,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    /// The 28 bytes of the request.
    pub fn to_bytes(&self) -> [u8; 28] {
        let mut b = [0u8; 28];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.command.code().to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// The header of a transmission reply, simple or structured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyHeader {
    /// "S: 32 bits, 0x67446698, magic / 32 bits, error / 64 bits, cookie",
    /// followed by the data for a successful read.
    Simple { error: u32, cookie: u64 },
    /// "S: 32 bits, 0x668e33ef, magic / 16 bits, flags / 16 bits, type /
    /// 64 bits, cookie / 32 bits, length of payload (unsigned)".
    Structured {
        flags: u16,
        kind: u16,
        cookie: u64,
        length: u32,
    },
}

impl ReplyHeader {
    /// Reads a reply header.
    ///
    /// # Errors
    /// I/O errors; an unknown magic (`InvalidData`).
    pub fn read_from(r: &mut dyn Read) -> io::Result<ReplyHeader> {
        match be32(r)? {
            SIMPLE_REPLY_MAGIC => Ok(ReplyHeader::Simple {
                error: be32(r)?,
                cookie: be64(r)?,
            }),
            STRUCTURED_REPLY_MAGIC => Ok(ReplyHeader::Structured {
                flags: be16(r)?,
                kind: be16(r)?,
                cookie: be64(r)?,
                length: be32(r)?,
            }),
            m => Err(invalid(format!("reply magic {m:#010x}"))),
        }
    }
}

/// An `InvalidData` error: the peer broke the protocol.
pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The name of an NBD error number, as the spec lists them.
pub fn errno_name(e: u32) -> &'static str {
    match e {
        0 => "success",
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => "unknown error",
    }
}

/// Names option reply errors.
pub fn rep_error_name(kind: u32) -> &'static str {
    match kind & !REP_FLAG_ERROR {
        1 => "unsupported option",
        2 => "denied by policy",
        3 => "invalid option data",
        4 => "not supported on this platform",
        5 => "TLS required",
        6 => "unknown export",
        7 => "server shutting down",
        8 => "block size required",
        9 => "request too big",
        10 => "extended headers required",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = Request {
            flags: CMD_FLAG_DF,
            command: Command::Read,
            cookie: 0x0102_0304_0506_0708,
            offset: 0x1000,
            length: 512,
        };
        let b = r.to_bytes();
        assert_eq!(&b[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(&b[4..8], &[0, 4, 0, 0]);
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 0x10, 0]);
        assert_eq!(&b[24..28], &[0, 0, 2, 0]);
    }

    #[test]
    fn replies_parse_and_hostile_lengths_are_refused() {
        let mut b = Vec::new();
        b.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
        b.extend_from_slice(&REPLY_TYPE_NONE.to_be_bytes());
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        let h = ReplyHeader::read_from(&mut &b[..]).unwrap();
        assert_eq!(
            h,
            ReplyHeader::Structured {
                flags: 1,
                kind: 0,
                cookie: 7,
                length: 0
            }
        );
        assert!(ReplyHeader::read_from(&mut &[0u8; 16][..]).is_err());

        let mut o = Vec::new();
        o.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
        o.extend_from_slice(&OPT_GO.to_be_bytes());
        o.extend_from_slice(&REP_ACK.to_be_bytes());
        o.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = OptionReply::read_from(&mut &o[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
