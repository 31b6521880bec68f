//! The SFTP wire protocol, version 3: constants and the packets layerscope
//! sends and receives, each with the sentence of the specification it
//! implements (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks).
//! Encoding and decoding only: no pipes, no state. Integers are big-endian
//! ("network byte order"); a `string` is a uint32 length and that many
//! bytes.
//!
//! Only the read-only subset exists here: OPEN is encoded with
//! `SSH_FXF_READ` and nothing else, and there is no way to encode WRITE,
//! REMOVE, SETSTAT or the like, so the client cannot send them by mistake.
use std::io;

/// "The protocol version that the client uses … This document describes
/// version 3 of the protocol."
pub const VERSION: u32 = 3;

/// Packet types: "SSH_FXP_INIT 1, SSH_FXP_VERSION 2, SSH_FXP_OPEN 3,
/// SSH_FXP_CLOSE 4, SSH_FXP_READ 5, … SSH_FXP_FSTAT 8, … SSH_FXP_REALPATH
/// 16, SSH_FXP_STAT 17, … SSH_FXP_STATUS 101, SSH_FXP_HANDLE 102,
/// SSH_FXP_DATA 103, SSH_FXP_NAME 104, SSH_FXP_ATTRS 105, SSH_FXP_EXTENDED
/// 200, SSH_FXP_EXTENDED_REPLY 201".
pub const FXP_INIT: u8 = 1;
pub const FXP_VERSION: u8 = 2;
pub const FXP_OPEN: u8 = 3;
pub const FXP_CLOSE: u8 = 4;
pub const FXP_READ: u8 = 5;
pub const FXP_FSTAT: u8 = 8;
pub const FXP_REALPATH: u8 = 16;
pub const FXP_STAT: u8 = 17;
pub const FXP_STATUS: u8 = 101;
pub const FXP_HANDLE: u8 = 102;
pub const FXP_DATA: u8 = 103;
pub const FXP_NAME: u8 = 104;
pub const FXP_ATTRS: u8 = 105;
pub const FXP_EXTENDED: u8 = 200;
pub const FXP_EXTENDED_REPLY: u8 = 201;

/// "SSH_FXF_READ: Open the file for reading." The only open flag
/// layerscope ever sends.
pub const FXF_READ: u32 = 0x0000_0001;

/// Attribute flags: "SSH_FILEXFER_ATTR_SIZE 0x00000001,
/// SSH_FILEXFER_ATTR_UIDGID 0x00000002, SSH_FILEXFER_ATTR_PERMISSIONS
/// 0x00000004, SSH_FILEXFER_ATTR_ACMODTIME 0x00000008,
/// SSH_FILEXFER_ATTR_EXTENDED 0x80000000".
pub const ATTR_SIZE: u32 = 0x0000_0001;
pub const ATTR_UIDGID: u32 = 0x0000_0002;
pub const ATTR_PERMISSIONS: u32 = 0x0000_0004;
pub const ATTR_ACMODTIME: u32 = 0x0000_0008;
pub const ATTR_EXTENDED: u32 = 0x8000_0000;

/// Status codes: "SSH_FX_OK 0, SSH_FX_EOF 1, SSH_FX_NO_SUCH_FILE 2,
/// SSH_FX_PERMISSION_DENIED 3, SSH_FX_FAILURE 4, SSH_FX_BAD_MESSAGE 5,
/// SSH_FX_NO_CONNECTION 6, SSH_FX_CONNECTION_LOST 7, SSH_FX_OP_UNSUPPORTED
/// 8".
pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_FAILURE: u32 = 4;
pub const FX_BAD_MESSAGE: u32 = 5;
pub const FX_OP_UNSUPPORTED: u32 = 8;

/// "All servers SHOULD support packets of at least 34000 bytes (where the
/// packet size refers to the full length, including the header above).
/// This should allow for reads and writes of at most 32768 bytes." The
/// read size used when the server does not say more (OpenSSH's
/// `limits@openssh.com` does).
pub const DEFAULT_READ: u32 = 32 << 10;

/// The largest read layerscope asks for even when a server offers more.
pub const MAX_READ: u32 = 256 << 10;

/// The largest packet accepted from the server: a DATA reply to the largest
/// read plus its header; anything longer is hostile or broken. (NAME
/// replies to REALPATH carry one name, far below this.)
pub const MAX_PACKET: u32 = MAX_READ + 1024;

/// OpenSSH's extension announcing the server's limits.
pub const LIMITS_EXT: &str = "limits@openssh.com";

/// "All packets transmitted over the secure connection are of the following
/// format: uint32 length / byte type / byte[length - 1] data payload. That
/// is, they are just data preceded by 32-bit length. The maximum size of a
/// packet is in practice determined by the client …"
///
/// The 4-byte length of a packet; the type and payload follow. Refuses
/// empty packets and packets over [`MAX_PACKET`].
///
/// # Errors
/// `InvalidData` for a length out of bounds.
pub fn packet_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(header);
    if len == 0 || len > MAX_PACKET {
        return Err(invalid(format!(
            "SFTP packet of {len} bytes (limit {MAX_PACKET})"
        )));
    }
    usize::try_from(len).map_err(|_| invalid(format!("SFTP packet of {len} bytes")))
}

/// Builds one request packet: the length, the type, the request id and
/// the payload fields.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    /// Starts a packet of `kind` (the length is filled in by
    /// [`Builder::finish`]).
    fn new(kind: u8) -> Builder {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        Builder { buf }
    }

    fn u32(mut self, v: u32) -> Builder {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u64(mut self, v: u64) -> Builder {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn string(self, s: &[u8]) -> io::Result<Builder> {
        let len = u32::try_from(s.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut b = self.u32(len);
        b.buf.extend_from_slice(s);
        Ok(b)
    }

    /// The bytes of the packet, length first.
    fn finish(mut self) -> io::Result<Vec<u8>> {
        let len = self
            .buf
            .len()
            .checked_sub(4)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if let Some(head) = self.buf.get_mut(..4) {
            head.copy_from_slice(&len.to_be_bytes());
        }
        Ok(self.buf)
    }
}

/// "The SSH_FXP_INIT packet (from client to server) has the following data:
/// uint32 version / <extension data>". layerscope sends no extension data.
///
/// # Errors
/// None in practice (the packet is fixed).
pub fn init() -> io::Result<Vec<u8>> {
    Builder::new(FXP_INIT).u32(VERSION).finish()
}

/// "Files are opened and created using the SSH_FXP_OPEN message, whose data
/// part is as follows: uint32 id / string filename / uint32 pflags / ATTRS
/// attrs". Always `SSH_FXF_READ`, with empty attributes (flags 0).
///
/// # Errors
/// A path longer than 4 GiB.
pub fn open_read(id: u32, path: &[u8]) -> io::Result<Vec<u8>> {
    Builder::new(FXP_OPEN)
        .u32(id)
        .string(path)?
        .u32(FXF_READ)
        .u32(0)
        .finish()
}

/// "A file is closed by using the SSH_FXP_CLOSE request. Its data field has
/// the following format: uint32 id / string handle".
///
/// # Errors
/// A handle longer than 4 GiB.
pub fn close(id: u32, handle: &[u8]) -> io::Result<Vec<u8>> {
    Builder::new(FXP_CLOSE).u32(id).string(handle)?.finish()
}

/// "Once a file has been opened, it can be read using the SSH_FXP_READ
/// message, which has the following format: uint32 id / string handle /
/// uint64 offset / uint32 len".
///
/// # Errors
/// A handle longer than 4 GiB.
pub fn read(id: u32, handle: &[u8], offset: u64, len: u32) -> io::Result<Vec<u8>> {
    Builder::new(FXP_READ)
        .u32(id)
        .string(handle)?
        .u64(offset)
        .u32(len)
        .finish()
}

/// "SSH_FXP_STAT and SSH_FXP_LSTAT requests … have the following format:
/// uint32 id / string path". STAT follows symbolic links.
///
/// # Errors
/// A path longer than 4 GiB.
pub fn stat(id: u32, path: &[u8]) -> io::Result<Vec<u8>> {
    Builder::new(FXP_STAT).u32(id).string(path)?.finish()
}

/// "SSH_FXP_FSTAT differs from the others in that it returns status
/// information for an open file (identified by the file handle). Its
/// format is as follows: uint32 id / string handle".
///
/// # Errors
/// A handle longer than 4 GiB.
pub fn fstat(id: u32, handle: &[u8]) -> io::Result<Vec<u8>> {
    Builder::new(FXP_FSTAT).u32(id).string(handle)?.finish()
}

/// "The SSH_FXP_REALPATH request can be used to have the server
/// canonicalize any given path name to an absolute path. … The format of
/// the request is as follows: uint32 id / string path".
///
/// # Errors
/// A path longer than 4 GiB.
pub fn realpath(id: u32, path: &[u8]) -> io::Result<Vec<u8>> {
    Builder::new(FXP_REALPATH).u32(id).string(path)?.finish()
}

/// "The SSH_FXP_EXTENDED request provides a generic extension mechanism …
/// uint32 id / string extended-request / … any request-specific data".
/// Used only for `limits@openssh.com`, which has no data.
///
/// # Errors
/// None in practice.
pub fn extended(id: u32, name: &str) -> io::Result<Vec<u8>> {
    Builder::new(FXP_EXTENDED)
        .u32(id)
        .string(name.as_bytes())?
        .finish()
}

/// A cursor over a received packet's payload; every read is bounded by
/// the bytes that are there.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn take(&mut self, n: usize, what: &str) -> io::Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(invalid(format!(
                "SFTP packet ends inside {what} ({} of {n} bytes)",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A uint32.
    ///
    /// # Errors
    /// `InvalidData` when the packet ends first.
    pub fn u32(&mut self, what: &str) -> io::Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
            b.get(2).copied().unwrap_or(0),
            b.get(3).copied().unwrap_or(0),
        ]))
    }

    /// A uint64.
    ///
    /// # Errors
    /// `InvalidData` when the packet ends first.
    pub fn u64(&mut self, what: &str) -> io::Result<u64> {
        let hi = self.u32(what)?;
        let lo = self.u32(what)?;
        Ok((u64::from(hi) << 32) | u64::from(lo))
    }

    /// A string: its length, then that many bytes (bounded by the packet).
    ///
    /// # Errors
    /// `InvalidData` when the packet ends first.
    pub fn string(&mut self, what: &str) -> io::Result<&'a [u8]> {
        let len = self.u32(what)?;
        let n = usize::try_from(len).map_err(|_| invalid(format!("{what}: {len} bytes")))?;
        self.take(n, what)
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// "The same encoding is used both when returning file attributes from the
/// server and when sending file attributes to the server. … uint32 flags /
/// uint64 size (present only if flag SSH_FILEXFER_ATTR_SIZE) / uint32 uid
/// (present only if flag SSH_FILEXFER_ATTR_UIDGID) / uint32 gid (present
/// only if flag SSH_FILEXFER_ATTR_UIDGID) / uint32 permissions (present only
/// if flag SSH_FILEXFER_ATTR_PERMISSIONS) / uint32 atime (present only if
/// flag SSH_FILEXFER_ACMODTIME) / uint32 mtime (present only if flag
/// SSH_FILEXFER_ACMODTIME) / uint32 extended_count (present only if flag
/// SSH_FILEXFER_ATTR_EXTENDED) / string extended_type / string
/// extended_data / … more extended data (extended_type - extended_data
/// pairs), so that number of pairs equals extended_count".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    pub mtime: Option<u32>,
}

/// `S_IFMT` and `S_IFDIR` of the POSIX mode in `permissions` (OpenSSH and
/// every common server send the whole `st_mode`).
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

impl Attrs {
    /// Decodes attributes. Extended pairs are skipped, each bounded by the
    /// packet's length, so their count cannot make us loop past it.
    ///
    /// # Errors
    /// `InvalidData` when the packet ends inside them.
    pub fn decode(r: &mut Reader<'_>) -> io::Result<Attrs> {
        let flags = r.u32("attribute flags")?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(r.u64("size")?);
        }
        if flags & ATTR_UIDGID != 0 {
            r.u32("uid")?;
            r.u32("gid")?;
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.permissions = Some(r.u32("permissions")?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            r.u32("atime")?;
            a.mtime = Some(r.u32("mtime")?);
        }
        if flags & ATTR_EXTENDED != 0 {
            let count = r.u32("extended_count")?;
            for _ in 0..count {
                if r.is_empty() {
                    return Err(invalid(format!(
                        "SFTP attributes claim {count} extended pairs past the packet's end"
                    )));
                }
                r.string("extended_type")?;
                r.string("extended_data")?;
            }
        }
        Ok(a)
    }

    /// True when the mode says directory.
    pub fn is_dir(&self) -> bool {
        self.permissions.is_some_and(|p| p & S_IFMT == S_IFDIR)
    }

    /// True when the mode says a regular file, or says nothing.
    pub fn is_regular_or_unknown(&self) -> bool {
        self.permissions.is_none_or(|p| p & S_IFMT == S_IFREG)
    }
}

/// A reply from the server, decoded as far as layerscope needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// "The SSH_FXP_STATUS response … uint32 id / uint32 error/status code /
    /// string error message (ISO-10646 UTF-8 [RFC-2279]) / string language
    /// tag". (Some old servers omit the last two: they are optional here.)
    Status { code: u32, message: String },
    /// "The SSH_FXP_HANDLE response has the following format: uint32 id /
    /// string handle". "The handle strings MUST NOT be longer than 256
    /// bytes."
    Handle(Vec<u8>),
    /// "The SSH_FXP_DATA response has the following format: uint32 id /
    /// string data".
    Data(Vec<u8>),
    /// "The SSH_FXP_NAME response has the following format: uint32 id /
    /// uint32 count / repeats count times: string filename / string
    /// longname / ATTRS attrs". Only the first name is kept (REALPATH sends
    /// one).
    Name(Vec<u8>),
    /// "The SSH_FXP_ATTRS response has the following format: uint32 id /
    /// ATTRS attrs".
    Attrs(Attrs),
    /// "uint32 id / … any request-specific data" of SSH_FXP_EXTENDED_REPLY.
    Extended(Vec<u8>),
}

/// The longest handle a server may send ("MUST NOT be longer than 256
/// bytes").
pub const MAX_HANDLE: usize = 256;

/// Splits a received packet (type and payload, without the length) into
/// its request id and reply. Unknown types are protocol errors.
///
/// # Errors
/// `InvalidData` for a malformed or unexpected packet.
pub fn decode_reply(packet: &[u8]) -> io::Result<(u32, Reply)> {
    let (&kind, payload) = packet
        .split_first()
        .ok_or_else(|| invalid("empty SFTP packet".into()))?;
    let mut r = Reader::new(payload);
    let id = r.u32("request id")?;
    let reply = match kind {
        FXP_STATUS => {
            let code = r.u32("status code")?;
            let message = if r.is_empty() {
                String::new()
            } else {
                String::from_utf8_lossy(r.string("status message")?).into_owned()
            };
            Reply::Status { code, message }
        }
        FXP_HANDLE => {
            let h = r.string("handle")?;
            if h.len() > MAX_HANDLE {
                return Err(invalid(format!(
                    "SFTP handle of {} bytes (limit {MAX_HANDLE})",
                    h.len()
                )));
            }
            Reply::Handle(h.to_vec())
        }
        FXP_DATA => Reply::Data(r.string("data")?.to_vec()),
        FXP_NAME => {
            let count = r.u32("name count")?;
            if count == 0 {
                return Err(invalid("SFTP NAME reply with no name".into()));
            }
            Reply::Name(r.string("filename")?.to_vec())
        }
        FXP_ATTRS => Reply::Attrs(Attrs::decode(&mut r)?),
        FXP_EXTENDED_REPLY => Reply::Extended(r.rest.to_vec()),
        k => return Err(invalid(format!("unexpected SFTP packet type {k}"))),
    };
    Ok((id, reply))
}

/// "The SSH_FXP_VERSION packet (from server to client) has the following
/// data: uint32 version / <extension data>" where "the extension data …
/// consists of … string extension_name / string extension_data" pairs.
/// Returns the version and the extension names.
///
/// # Errors
/// `InvalidData` when the packet is not a VERSION or is malformed.
pub fn decode_version(packet: &[u8]) -> io::Result<(u32, Vec<String>)> {
    let (&kind, payload) = packet
        .split_first()
        .ok_or_else(|| invalid("empty SFTP packet".into()))?;
    if kind != FXP_VERSION {
        return Err(invalid(format!(
            "the server answered INIT with packet type {kind}, not VERSION"
        )));
    }
    let mut r = Reader::new(payload);
    let version = r.u32("version")?;
    let mut names = Vec::new();
    while !r.is_empty() {
        names.push(String::from_utf8_lossy(r.string("extension name")?).into_owned());
        r.string("extension data")?;
    }
    Ok((version, names))
}

/// The reply to `limits@openssh.com`: "uint64 max-packet-length / uint64
/// max-read-length / uint64 max-write-length / uint64 max-open-handles"
/// (OpenSSH's PROTOCOL file). Returns the read limit (0 means unlimited).
///
/// # Errors
/// `InvalidData` when the reply is short.
pub fn decode_limits(data: &[u8]) -> io::Result<u64> {
    let mut r = Reader::new(data);
    r.u64("max-packet-length")?;
    r.u64("max-read-length")
}

/// The name of a status code, as the draft lists them.
pub fn status_name(code: u32) -> &'static str {
    match code {
        FX_OK => "SSH_FX_OK",
        FX_EOF => "SSH_FX_EOF",
        FX_NO_SUCH_FILE => "no such file",
        FX_PERMISSION_DENIED => "permission denied",
        FX_FAILURE => "failure",
        FX_BAD_MESSAGE => "bad message",
        6 => "no connection",
        7 => "connection lost",
        FX_OP_UNSUPPORTED => "operation unsupported",
        _ => "unknown status",
    }
}

/// An `InvalidData` error: the server broke the protocol.
pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_layout() {
        let p = read(7, b"h1", 0x1_0000_0000, 4096).unwrap();
        let want: Vec<u8> = [
            &[0, 0, 0, 23][..], // length after these 4 bytes
            &[FXP_READ],        // type
            &[0, 0, 0, 7],      // id
            &[0, 0, 0, 2, b'h', b'1'],
            &[0, 0, 0, 1, 0, 0, 0, 0], // offset
            &[0, 0, 0x10, 0],          // len
        ]
        .concat();
        assert_eq!(p, want);
        let o = open_read(1, b"/a").unwrap();
        assert_eq!(&o[o.len() - 8..], &[0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(init().unwrap(), vec![0, 0, 0, 5, FXP_INIT, 0, 0, 0, 3]);
    }

    #[test]
    fn replies_decode_and_hostile_ones_are_refused() {
        let mut status = vec![FXP_STATUS, 0, 0, 0, 9, 0, 0, 0, 2];
        status.extend_from_slice(&[0, 0, 0, 2, b'n', b'o', 0, 0, 0, 0]);
        assert_eq!(
            decode_reply(&status).unwrap(),
            (
                9,
                Reply::Status {
                    code: FX_NO_SUCH_FILE,
                    message: "no".into()
                }
            )
        );
        // A string that claims more bytes than the packet has.
        let data = [FXP_DATA, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1, 2];
        assert_eq!(
            decode_reply(&data).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Attributes claiming four billion extended pairs end at the packet.
        let attrs = [
            FXP_ATTRS, 0, 0, 0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(decode_reply(&attrs).is_err());
        let ok = [FXP_ATTRS, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        let (_, a) = decode_reply(&ok).unwrap();
        assert_eq!(
            a,
            Reply::Attrs(Attrs {
                size: Some(9),
                ..Attrs::default()
            })
        );
        assert!(packet_len([0, 0, 0, 0]).is_err());
        assert!(packet_len((MAX_PACKET + 1).to_be_bytes()).is_err());
        let long_handle: Vec<u8> =
            [&[FXP_HANDLE, 0, 0, 0, 1, 0, 0, 1, 1][..], &[0u8; 257]].concat();
        assert!(decode_reply(&long_handle).is_err());
    }

    #[test]
    fn version_lists_extensions() {
        let mut v = vec![FXP_VERSION, 0, 0, 0, 3];
        for s in [&b"limits@openssh.com"[..], b"1"] {
            v.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
            v.extend_from_slice(s);
        }
        assert_eq!(
            decode_version(&v).unwrap(),
            (3, vec!["limits@openssh.com".to_owned()])
        );
        assert!(decode_version(&[FXP_STATUS, 0, 0, 0, 3]).is_err());
    }
}
