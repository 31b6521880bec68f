//! NBD servers that misbehave within the protocol's letter: replies that
//! never finish, one-byte chunks, a byte a second, an export of 2^63
//! bytes, block status answered 512 bytes at a time. An in-process server
//! (a thread on a unix socket) plays each part after a correct handshake.
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use layerscope::block::nbd::{NbdClient, NbdUri, Options};
use layerscope::block::BlockSource;

use super::{bounded, fails_with, run};

/// How the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Reads: NONE chunks without the DONE flag, without end.
    NoneWithoutDone,
    /// Reads: error chunks without the DONE flag, without end.
    ErrorsWithoutDone,
    /// Reads: every byte in its own data chunk (correct, if slow-witted).
    OneByteChunks,
    /// Reads: a correct reply, one byte every 50 ms.
    Trickle,
    /// An export of 2^63 - 512 bytes, block status answered 4 GiB at a time.
    Huge,
    /// Block status answered with one 512-byte extent each time.
    TinyExtents,
    /// `qemu:allocation-depth` too, every range at depth 2^32 - 1 (a chain
    /// of four billion layers, as the server tells it).
    DeepLayers,
}

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    pub reads: AtomicU64,
    pub statuses: AtomicU64,
}

/// The byte at `offset` of every export here.
pub fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn option_reply(s: &mut UnixStream, opt: u32, kind: u32, payload: &[u8]) -> std::io::Result<()> {
    let mut r = Vec::new();
    r.extend_from_slice(&0x0003_e889_0455_65a9u64.to_be_bytes());
    r.extend_from_slice(&opt.to_be_bytes());
    r.extend_from_slice(&kind.to_be_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    r.extend_from_slice(payload);
    s.write_all(&r)
}

fn chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&0x668e_33efu32.to_be_bytes());
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&kind.to_be_bytes());
    r.extend_from_slice(&cookie.to_be_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// The fixed-newstyle handshake with structured replies, `base:allocation`
/// (id 1), an optional description, and an export of `size` bytes.
pub fn handshake(s: &mut UnixStream, size: u64, description: Option<&[u8]>) -> std::io::Result<()> {
    handshake_with(s, size, description, &["base:allocation"])
}

/// [`handshake`] with the meta contexts `contexts` (ids 1, 2, ... in order).
pub fn handshake_with(
    s: &mut UnixStream,
    size: u64,
    description: Option<&[u8]>,
    contexts: &[&str],
) -> std::io::Result<()> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&0x4e42_444d_4147_4943u64.to_be_bytes());
    hello.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
    hello.extend_from_slice(&3u16.to_be_bytes());
    s.write_all(&hello)?;
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags)?;
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h)?;
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        match opt {
            8 => option_reply(s, opt, 1, &[])?,
            10 => {
                for (id, name) in (1u32..).zip(contexts) {
                    let mut ctx = id.to_be_bytes().to_vec();
                    ctx.extend_from_slice(name.as_bytes());
                    option_reply(s, opt, 4, &ctx)?;
                }
                option_reply(s, opt, 1, &[])?;
            }
            7 => {
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&(1u16 | 2).to_be_bytes());
                option_reply(s, opt, 3, &info)?;
                if let Some(d) = description {
                    let mut p = 2u16.to_be_bytes().to_vec();
                    p.extend_from_slice(d);
                    option_reply(s, opt, 3, &p)?;
                }
                option_reply(s, opt, 1, &[])?;
                return Ok(());
            }
            _ => option_reply(s, opt, (1 << 31) | 1, &[])?,
        }
    }
}

fn serve_one(mut s: UnixStream, part: Part, seen: &Seen) -> std::io::Result<()> {
    let size = if part == Part::Huge {
        (1u64 << 63) - 512
    } else {
        64 << 20
    };
    if part == Part::DeepLayers {
        handshake_with(
            &mut s,
            size,
            None,
            &["base:allocation", "qemu:allocation-depth"],
        )?;
    } else {
        handshake(&mut s, size, None)?;
    }
    loop {
        let mut req = [0u8; 28];
        s.read_exact(&mut req)?;
        let kind = u16::from_be_bytes([req[6], req[7]]);
        let cookie = u64::from_be_bytes(req[8..16].try_into().unwrap());
        let offset = u64::from_be_bytes(req[16..24].try_into().unwrap());
        let len = u32::from_be_bytes(req[24..28].try_into().unwrap());
        match kind {
            2 => return Ok(()),
            7 => {
                seen.statuses.fetch_add(1, Ordering::Relaxed);
                let n = match part {
                    Part::TinyExtents => 512,
                    _ => len,
                };
                let mut p = 1u32.to_be_bytes().to_vec();
                p.extend_from_slice(&n.to_be_bytes());
                p.extend_from_slice(&0u32.to_be_bytes());
                if part == Part::DeepLayers {
                    s.write_all(&chunk(0, 5, cookie, &p))?;
                    let mut p = 2u32.to_be_bytes().to_vec();
                    p.extend_from_slice(&n.to_be_bytes());
                    p.extend_from_slice(&u32::MAX.to_be_bytes());
                    s.write_all(&chunk(1, 5, cookie, &p))?;
                } else {
                    s.write_all(&chunk(1, 5, cookie, &p))?;
                }
            }
            0 => {
                seen.reads.fetch_add(1, Ordering::Relaxed);
                let data: Vec<u8> = (offset..offset + u64::from(len)).map(pattern).collect();
                let mut whole = offset.to_be_bytes().to_vec();
                whole.extend_from_slice(&data);
                match part {
                    Part::NoneWithoutDone => loop {
                        s.write_all(&chunk(0, 0, cookie, &[]))?;
                    },
                    Part::ErrorsWithoutDone => loop {
                        let mut e = 5u32.to_be_bytes().to_vec();
                        e.extend_from_slice(&0u16.to_be_bytes());
                        s.write_all(&chunk(0, (1 << 15) + 1, cookie, &e))?;
                    },
                    Part::OneByteChunks => {
                        let mut out = std::io::BufWriter::new(&mut s);
                        for (i, b) in data.iter().enumerate() {
                            let mut p = (offset + i as u64).to_be_bytes().to_vec();
                            p.push(*b);
                            let last = i + 1 == data.len();
                            out.write_all(&chunk(u16::from(last), 1, cookie, &p))?;
                        }
                        out.flush()?;
                    }
                    Part::Trickle => {
                        for b in chunk(1, 1, cookie, &whole) {
                            s.write_all(&[b])?;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    Part::Huge | Part::TinyExtents | Part::DeepLayers => {
                        s.write_all(&chunk(1, 1, cookie, &whole))?
                    }
                }
            }
            _ => return Ok(()),
        }
    }
}

/// A server playing `part` on a socket in `dir`, for every connection.
pub fn serve(dir: &Path, part: Part) -> (String, Arc<Seen>) {
    let sock = dir.join(format!("{part:?}.sock"));
    let listener = UnixListener::bind(&sock).unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let seen = Arc::clone(&s2);
            std::thread::spawn(move || {
                let _ = serve_one(conn, part, &seen);
            });
        }
    });
    (format!("nbd+unix:///?socket={}", sock.display()), seen)
}

fn message(err: &layerscope::block::BlockError) -> String {
    let mut msg = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    msg
}

/// Replies that never end (NONE or error chunks without DONE) and a reply
/// trickling in a byte at a time end with an error; one-byte chunks are
/// read correctly, in time that follows the chunks (no quadratic check).
#[test]
fn replies_that_never_finish_end_in_errors() {
    let d = tempfile::tempdir().unwrap();
    for (part, expected) in [
        (
            Part::NoneWithoutDone,
            Some("NONE chunk without the DONE flag"),
        ),
        (Part::ErrorsWithoutDone, Some("more than 64 error chunks")),
        (Part::Trickle, Some("did not finish answering within")),
        (Part::OneByteChunks, None),
    ] {
        let (uri, _) = serve(d.path(), part);
        let opts = Options {
            request_timeout: Duration::from_secs(if part == Part::OneByteChunks { 30 } else { 2 }),
            operation_timeout: Duration::from_secs(if part == Part::OneByteChunks {
                60
            } else {
                3
            }),
            reconnect_attempts: 0,
            // One request for the whole read: 2^21 one-byte chunks in one
            // reply (checked pairwise, that was 2^41 comparisons).
            max_request: 2 << 20,
            ..Options::default()
        };
        let client = NbdClient::connect(NbdUri::parse(&uri).unwrap(), opts).unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 2 << 20];
        let got = client.read_at(4096, &mut buf);
        // A hang guard, not a timing figure.
        assert!(
            start.elapsed() < super::HANG,
            "{part:?} took {:?}",
            start.elapsed()
        );
        match expected {
            Some(words) => {
                let msg = message(&got.expect_err(&format!("{part:?} must fail")));
                assert!(msg.contains(words), "{part:?}: {msg}");
            }
            None => {
                got.unwrap_or_else(|e| panic!("{part:?}: {}", message(&e)));
                assert!(buf
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == pattern(4096 + i as u64)));
            }
        }
    }
}

/// An export of 2^63 bytes: `map` stops with a clear error after a
/// bounded number of block status rounds (printing what it mapped), and
/// `render` draws its frame with the map's rest shown as not read.
#[test]
fn an_export_of_2_63_bytes_is_mapped_within_bounds() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (uri, seen) = serve(dir, Part::Huge);
    let r = run(dir, &["map", &uri], b"");
    fails_with(
        &r,
        "map",
        &["map truncated at offset", "block status rounds"],
    );
    assert!(r.text().contains("data"), "{}", r.text());
    let statuses = seen.statuses.load(Ordering::Relaxed);
    assert!(statuses <= 16 << 14, "{statuses} block status requests");
    let r = run(dir, &["map", "--json", &uri], b"");
    fails_with(&r, "map --json", &["map truncated at offset"]);
    let r = run(dir, &["render", &uri, "--size", "120x40"], b"");
    bounded(&r, "render");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.text().contains("Chain"), "{}", r.text());
}

/// Block status answered one 512-byte extent at a time: a 4 MiB read
/// asks a handful of times, not once per sector, and reads the right
/// bytes.
#[test]
fn tiny_block_status_extents_do_not_cost_a_round_trip_each() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (uri, seen) = serve(dir, Part::TinyExtents);
    let r = run(
        dir,
        &["read", "--offset", "1M", "--length", "4M", &uri],
        b"",
    );
    bounded(&r, "read");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.len(), 4 << 20);
    assert!(r
        .stdout
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern((1 << 20) + i as u64)));
    let statuses = seen.statuses.load(Ordering::Relaxed);
    let reads = seen.reads.load(Ordering::Relaxed);
    assert!(statuses <= 4, "{statuses} block status requests for 4 MiB");
    assert!(reads <= 64, "{reads} read requests for 4 MiB");
}

/// A server that says its chain is 2^32 - 1 layers deep (every range at
/// that `qemu:allocation-depth`): the TUI counted a layer for each, and
/// its owner map allocated a counter per layer (32 GiB) before drawing.
/// Now it tells apart as many depths as the hit map does (64), the
/// deeper ones counted as the base, and draws within the memory bound.
#[test]
fn a_server_chain_of_four_billion_layers_is_drawn_in_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (uri, seen) = serve(dir, Part::DeepLayers);
    let r = run(dir, &["render", &uri, "--size", "120x40"], b"");
    bounded(&r, "render");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let frame = r.text();
    assert!(frame.contains("Hit map"), "{frame}");
    assert!(frame.contains("server chain: 64 layers"), "{frame}");
    assert!(seen.statuses.load(Ordering::Relaxed) > 0);
}
