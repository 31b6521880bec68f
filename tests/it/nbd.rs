//! NBD against real servers started by the tests (qemu-nbd, nbdkit) and an
//! in-process hostile server. Oracles: qemu-img convert, the local map of
//! the same chain, nbdinfo.
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use layerscope::block::hitmap::Served;
use layerscope::block::nbd::{NbdClient, NbdUri, Options};
use layerscope::block::BlockSource;
use serde_json::Value;

use crate::util::*;

/// A server process, killed when dropped.
pub(crate) struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `args` in `dir` and waits until `ready` exists (a socket) or a
/// TCP port answers.
pub(crate) fn serve(dir: &Path, args: &[&str], ready: &dyn Fn() -> bool) -> Server {
    serve_logged(dir, args, ready, Stdio::null())
}

/// [`serve`] with the server's stderr going to `log`.
fn serve_logged(dir: &Path, args: &[&str], ready: &dyn Fn() -> bool, log: Stdio) -> Server {
    let child = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    let server = Server { child };
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{args:?} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

pub(crate) fn socket_ready(p: PathBuf) -> impl Fn() -> bool {
    move || std::os::unix::net::UnixStream::connect(&p).is_ok()
}

fn unix_uri(sock: &Path) -> String {
    format!("nbd+unix:///?socket={}", sock.display())
}

/// A 3-layer chain with data, compressed and zero clusters, plus its flat
/// image from qemu-img.
fn chain(dir: &Path) -> Vec<u8> {
    mkfs(dir, "base", "16M", 20);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "base.raw",
            "base.qcow2",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "mid.qcow2",
        ],
    );
    qemu_io(
        dir,
        "mid.qcow2",
        &[
            "write -c -P 0x31 0x200000 64k",
            "write -z 0x300000 128k",
            "write -P 0x32 0x3ff000 4k",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(
        dir,
        "top.qcow2",
        &["write -P 0x33 0x110000 64k", "write -z 0 64k"],
    );
    sh(
        dir,
        &["qemu-img", "convert", "-O", "raw", "top.qcow2", "flat.raw"],
    );
    std::fs::read(dir.join("flat.raw")).unwrap()
}

/// Map entries reduced to what NBD can know (no host offsets), merged.
fn normalized(map: &Value) -> Vec<(u64, u64, u64, bool, bool, bool)> {
    let mut out: Vec<(u64, u64, u64, bool, bool, bool)> = Vec::new();
    for e in map.as_array().unwrap() {
        let k = (
            e["depth"].as_u64().unwrap(),
            e["present"] == true,
            e["zero"] == true,
            e["data"] == true,
        );
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        match out.last_mut() {
            Some(l) if (l.2, l.3, l.4, l.5) == k && l.0 + l.1 == start => l.1 += len,
            _ => out.push((start, len, k.0, k.1, k.2, k.3)),
        }
    }
    out
}

fn tools() -> bool {
    need("qemu-nbd") && need("qemu-img") && need("qemu-io") && need("mke2fs")
}

#[test]
fn qemu_nbd_export_reads_and_maps_like_the_local_chain() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let flat = chain(dir);
    let sock = dir.join("nbd.sock");
    let _server = serve(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "--shared=4",
            "-A",
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock.clone()),
    );
    let uri = unix_uri(&sock);
    let ours = layerscope(dir, &["read", &uri]).ok().stdout;
    assert!(ours == flat, "read over NBD differs from qemu-img convert");
    let remote = layerscope(dir, &["map", "--json", &uri]).ok().json();
    let local = layerscope(dir, &["map", "--json", "top.qcow2"]).ok().json();
    assert_eq!(
        normalized(&remote),
        normalized(&local),
        "map over NBD (allocation depth) differs from the local map"
    );
    // Without -A the server offers base:allocation only: data/zero/hole.
    let sock2 = dir.join("plain.sock");
    let _plain = serve(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "--socket",
            sock2.to_str().unwrap(),
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock2.clone()),
    );
    let info = layerscope(dir, &["nbd-info", "--json", &unix_uri(&sock2)])
        .ok()
        .json();
    let contexts: Vec<&str> = info["meta_contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["base:allocation"]);
    let plain = layerscope(dir, &["map", "--json", &unix_uri(&sock2)])
        .ok()
        .json();
    for e in plain.as_array().unwrap() {
        assert_eq!(e["depth"], 0);
        assert_eq!(
            e["present"],
            e["data"].as_bool().unwrap() || e["zero"] == false,
            "{e}"
        );
    }
}

/// Every connection ends with NBD_CMD_DISC ("the client SHOULD send
/// NBD_CMD_DISC" before closing), the multi-conn ones too: qemu-nbd's
/// trace counts the connections it negotiated and the disconnect
/// requests it decoded.
#[test]
fn every_connection_says_goodbye() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    chain(dir);
    let sock = dir.join("nbd.sock");
    let trace = std::fs::File::create(dir.join("trace.log")).unwrap();
    let _server = serve_logged(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "--shared=8",
            "-A",
            "--trace",
            "nbd_negotiate_success",
            "--trace",
            "nbd_co_receive_request_decode_type",
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock.clone()),
        Stdio::from(trace),
    );
    let uri = unix_uri(&sock);
    layerscope(dir, &["read", &uri, "--connections", "4"]).ok();
    layerscope(dir, &["read", &uri, "--connections", "1"]).ok();
    // The server logs as it gets to them.
    let counts = || {
        let log = std::fs::read_to_string(dir.join("trace.log")).unwrap_or_default();
        // The readiness probe above connected without negotiating.
        let conns = log.matches("nbd_negotiate_success").count();
        let discs = log.matches("(disconnect)").count();
        (conns, discs)
    };
    let start = Instant::now();
    while counts().0 != counts().1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (conns, discs) = counts();
    assert!(conns >= 5, "{conns} connections: multi-conn was not used");
    assert_eq!(discs, conns, "connections closed without NBD_CMD_DISC");
}

/// A 1 GiB chain mapped over NBD is asked in several windows at once
/// (64 MiB and up): runs that cross window edges must join up exactly as
/// in the local map.
#[test]
fn map_over_nbd_in_windows_equals_the_local_map() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let create = |args: &[&str]| {
        let mut a = vec!["qemu-img", "create", "-q", "-f", "qcow2"];
        a.extend_from_slice(args);
        sh(dir, &a);
    };
    create(&["base.qcow2", "1G"]);
    // Data across the 64 MiB and 128 MiB edges, a zero run across 512 MiB,
    // data at the very end.
    qemu_io(
        dir,
        "base.qcow2",
        &[
            "write -P 1 0x3ff0000 128k",
            "write -P 2 0x7f00000 2M",
            "write -z 0x1ff00000 1M",
            "write -P 3 0x3fff0000 64k",
        ],
    );
    create(&["-b", "base.qcow2", "-F", "qcow2", "top.qcow2"]);
    qemu_io(
        dir,
        "top.qcow2",
        &["write -P 4 0x4000000 64k", "write -z 0x8000000 4M"],
    );
    let sock = dir.join("nbd.sock");
    let _server = serve(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-A",
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock.clone()),
    );
    let remote = layerscope(dir, &["map", "--json", &unix_uri(&sock)])
        .ok()
        .json();
    let theirs = normalized(&qemu_map(dir, "top.qcow2"));
    assert!(theirs.len() >= 8, "{theirs:?}");
    assert_eq!(normalized(&remote), theirs, "map over NBD vs qemu-img map");
}

/// Bytes per depth (0 is the top) and from no layer that qemu's map of
/// `image` assigns to `[off, off + len)`.
fn map_served(cwd: &Path, image: &str, off: u64, len: u64) -> (BTreeMap<u64, u64>, u64) {
    let (mut by_depth, mut nowhere) = (BTreeMap::new(), 0);
    for e in qemu_map(cwd, image).as_array().unwrap() {
        let start = e["start"].as_u64().unwrap();
        let end = start + e["length"].as_u64().unwrap();
        let n = end.min(off + len).saturating_sub(start.max(off));
        if n == 0 {
            continue;
        }
        if e["present"] == true {
            *by_depth.entry(e["depth"].as_u64().unwrap()).or_default() += n;
        } else {
            nowhere += n;
        }
    }
    (by_depth, nowhere)
}

/// What `read --hits` says was served, per depth (layers that served
/// nothing left out) and from no layer.
fn read_hits(cwd: &Path, image: &str, off: u64, len: u64) -> (BTreeMap<u64, u64>, u64) {
    let run = layerscope(
        cwd,
        &[
            "read",
            "--hits",
            "--offset",
            &off.to_string(),
            "--length",
            &len.to_string(),
            image,
        ],
    )
    .ok();
    let hits: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    let by_depth = hits["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["bytes"] != 0)
        .map(|l| (l["depth"].as_u64().unwrap(), l["bytes"].as_u64().unwrap()))
        .collect();
    (by_depth, hits["nowhere"]["bytes"].as_u64().unwrap())
}

#[test]
fn hits_over_nbd_are_attributed_to_the_server_layers() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let flat = chain(dir);
    let sock = dir.join("nbd.sock");
    let _server = serve(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "--shared=4",
            "-A",
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock.clone()),
    );
    let uri = unix_uri(&sock);
    let size = flat.len() as u64;
    // The whole disk; a window over the top's data, mid's compressed and
    // zero clusters; a small read straddling a boundary inside a cluster.
    for (off, len) in [(0, size), (0x100000, 0x280000), (0x3fe800, 0x1000)] {
        let expected = map_served(dir, "top.qcow2", off, len);
        assert!(expected.0.len() >= 2 || len < 0x10000, "{expected:?}");
        assert_eq!(
            read_hits(dir, &uri, off, len),
            expected,
            "served over NBD, {off:#x}+{len:#x} (qemu-img map is the oracle)"
        );
        assert_eq!(
            read_hits(dir, "top.qcow2", off, len),
            expected,
            "served locally, {off:#x}+{len:#x}"
        );
    }
    // The library's hit map, as the TUI's "served" mode reads it: after a
    // full read every range is attributed to its layer, numbered from the
    // base (the deepest depth that served anything).
    let chain = layerscope::block::chain::open_nbd(&uri, Options::default()).unwrap();
    let reader = layerscope::block::layered::LayeredReader::new(&chain).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for at in (0..size).step_by(buf.len()) {
        let n = (size - at).min(buf.len() as u64) as usize;
        reader.read_at(at, &mut buf[..n]).unwrap();
    }
    let map = qemu_map(dir, "top.qcow2");
    let deepest = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["present"] == true)
        .map(|e| e["depth"].as_u64().unwrap())
        .max()
        .unwrap();
    for e in map.as_array().unwrap() {
        let start = e["start"].as_u64().unwrap();
        let end = start + e["length"].as_u64().unwrap();
        let want = if e["present"] == true {
            Served::Layer((deepest - e["depth"].as_u64().unwrap()) as usize)
        } else {
            Served::Nowhere
        };
        for at in [start, end - 1] {
            assert_eq!(reader.hits().served(at), want, "served at {at:#x}: {e}");
        }
    }
}

#[test]
fn nbd_info_agrees_with_nbdinfo() {
    if !tools() || !need("nbdinfo") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    chain(dir);
    let sock = dir.join("nbd.sock");
    let _server = serve(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-A",
            "-x",
            "disk one",
            "-D",
            "the top layer",
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock.clone()),
    );
    let uri = format!("nbd+unix:///disk%20one?socket={}", sock.display());
    let ours = layerscope(dir, &["nbd-info", "--json", &uri]).ok().json();
    let theirs: Value =
        serde_json::from_slice(&sh(dir, &["nbdinfo", "--json", &uri]).stdout).unwrap();
    let t = &theirs["exports"][0];
    // Every field both print (nbdinfo's "content" is file(1) on the first
    // sector; layerscope has `info` for that).
    assert_eq!(ours["uri"], t["uri"]);
    assert_eq!(ours["protocol"], theirs["protocol"]);
    assert_eq!(ours["tls"], theirs["TLS"]);
    assert_eq!(ours["description"], t["description"]);
    assert_eq!(ours["description"], "the top layer");
    assert_eq!(ours["name"], t["export-name"]);
    assert_eq!(ours["size"], t["export-size"]);
    assert_eq!(ours["block_min"], t["block_size_minimum"]);
    assert_eq!(ours["block_preferred"], t["block_size_preferred"]);
    assert_eq!(ours["block_max"], t["block_size_maximum"]);
    assert_eq!(ours["structured_replies"], theirs["structured"]);
    let names: Vec<&str> = ours["flag_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (flag, key) in [
        ("read-only", "is_read_only"),
        ("flush", "can_flush"),
        ("fua", "can_fua"),
        ("cache", "can_cache"),
        ("df", "can_df"),
        ("multi-conn", "can_multi_conn"),
        ("trim", "can_trim"),
        ("write-zeroes", "can_zero"),
        ("rotational", "is_rotational"),
        ("fast-zero", "can_fast_zero"),
    ] {
        assert_eq!(
            names.contains(&flag),
            t[key] == true,
            "{flag} vs nbdinfo {key}"
        );
    }
    let mut ctx: Vec<&str> = ours["meta_contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_str().unwrap())
        .collect();
    let mut their_ctx: Vec<&str> = t["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    ctx.sort();
    their_ctx.sort();
    assert_eq!(ctx, their_ctx);
    assert_eq!(ours["status"]["state"], "ready");
}

#[test]
fn tcp_export_and_export_list() {
    if !tools() || !need("nbdinfo") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let flat = chain(dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _server = serve(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-x",
            "top",
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &|| std::net::TcpStream::connect(&addr).is_ok(),
    );
    let uri = format!("nbd://127.0.0.1:{port}/top");
    assert!(layerscope(dir, &["read", &uri]).ok().stdout == flat);
    let ours = layerscope(
        dir,
        &["exports", "--json", &format!("nbd://127.0.0.1:{port}")],
    )
    .ok()
    .json();
    let theirs: Value = serde_json::from_slice(
        &sh(
            dir,
            &[
                "nbdinfo",
                "--list",
                "--json",
                &format!("nbd://127.0.0.1:{port}"),
            ],
        )
        .stdout,
    )
    .unwrap();
    let names: Vec<&Value> = ours
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["name"])
        .collect();
    let their_names: Vec<&Value> = theirs["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["export-name"])
        .collect();
    assert_eq!(names, their_names);
    // The wrong export name: a clear error naming the URI.
    let run = layerscope(
        dir,
        &[
            "read",
            &format!("nbd://127.0.0.1:{port}/nope"),
            "--length",
            "1",
        ],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("nope") && run.stderr.lines().count() == 1,
        "{}",
        run.stderr
    );
}

#[test]
fn nbdkit_without_structured_replies_and_with_errors() {
    if !need("nbdkit") || !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "disk", "8M", 10);
    let flat = std::fs::read(dir.join("disk.raw")).unwrap();
    let sock = dir.join("kit.sock");
    let _kit = serve(
        dir,
        &[
            "nbdkit",
            "-f",
            "-r",
            "--no-sr",
            "-U",
            sock.to_str().unwrap(),
            "file",
            "file=disk.raw",
        ],
        &socket_ready(sock.clone()),
    );
    let uri = unix_uri(&sock);
    assert!(
        layerscope(dir, &["read", &uri]).ok().stdout == flat,
        "simple replies"
    );
    let info = layerscope(dir, &["nbd-info", "--json", &uri]).ok().json();
    assert_eq!(info["structured_replies"], false);

    let sock2 = dir.join("mem.sock");
    let _mem = serve(
        dir,
        &[
            "nbdkit",
            "-f",
            "-U",
            sock2.to_str().unwrap(),
            "memory",
            "64M",
        ],
        &socket_ready(sock2.clone()),
    );
    let zeros = layerscope(dir, &["read", &unix_uri(&sock2), "--length", "1M"])
        .ok()
        .stdout;
    assert!(zeros.len() == 1 << 20 && zeros.iter().all(|&b| b == 0));

    let sock3 = dir.join("err.sock");
    let _err = serve(
        dir,
        &[
            "nbdkit",
            "-f",
            "-r",
            "-U",
            sock3.to_str().unwrap(),
            "--filter=error",
            "file",
            "file=disk.raw",
            "error-pread-rate=100%",
            "error-pread=EIO",
        ],
        &socket_ready(sock3.clone()),
    );
    let run = layerscope(dir, &["read", &unix_uri(&sock3), "--length", "64K"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("EIO")
            && run.stderr.lines().count() == 1
            && !run.stderr.contains("panicked"),
        "{}",
        run.stderr
    );
}

#[test]
fn stalled_server_times_out() {
    if !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let sock = dir.join("slow.sock");
    let _slow = serve(
        dir,
        &[
            "nbdkit",
            "-f",
            "-U",
            sock.to_str().unwrap(),
            "--filter=delay",
            "memory",
            "16M",
            "delay-read=30",
        ],
        &socket_ready(sock.clone()),
    );
    let opts = Options {
        request_timeout: Duration::from_millis(500),
        reconnect_attempts: 0,
        ..Options::default()
    };
    let client = NbdClient::connect(NbdUri::parse(&unix_uri(&sock)).unwrap(), opts).unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let err = client.read_at(0, &mut buf).unwrap_err();
    // A guard against a hang, not a timing figure: the request time
    // limit ends it far sooner, but a loaded CI machine may be slow.
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        format!("{err:#}").contains(&sock.display().to_string()),
        "{err:#}"
    );
    let s = client.stats().snapshot();
    assert_eq!(format!("{:?}", s.state), "Failed");
    assert!(s.last_error.is_some());
}

/// The connection's status is readable while a read waits for the
/// server (what the TUI's NBD pane and `nbd-info` show): requests in
/// flight during, counters and latencies after.
#[test]
fn status_while_reads_are_in_flight() {
    if !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("slow.sock");
    let _slow = serve(
        d.path(),
        &[
            "nbdkit",
            "-f",
            "-r",
            "-U",
            sock.to_str().unwrap(),
            "--filter=delay",
            "memory",
            "16M",
            "delay-read=1",
        ],
        &socket_ready(sock.clone()),
    );
    let client =
        NbdClient::connect(NbdUri::parse(&unix_uri(&sock)).unwrap(), Options::default()).unwrap();
    let stats = client.stats().clone();
    let before = stats.snapshot();
    assert_eq!((before.requests, before.in_flight), (0, 0));
    let len = 4usize << 20;
    let (mut most, mut during_state) = (0, None);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut buf = vec![1u8; len];
            client.read_at(0, &mut buf).unwrap();
            buf
        });
        while !reader.is_finished() {
            let snap = stats.snapshot();
            if snap.in_flight > most {
                most = snap.in_flight;
                during_state = Some(snap.state);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(reader.join().unwrap().iter().all(|&b| b == 0));
    });
    let per_request = 256u64 << 10;
    assert!(
        most > 1 && most <= Options::default().max_in_flight as u64,
        "requests in flight seen during the read: {most}"
    );
    assert_eq!(format!("{:?}", during_state.unwrap()), "Ready");
    let after = stats.snapshot();
    assert_eq!(after.in_flight, 0);
    assert_eq!(after.requests, len as u64 / per_request);
    assert_eq!(after.bytes_read, len as u64);
    assert_eq!(after.errors, 0);
    // nbdkit held every read for a second.
    assert!(after.latency_p50_us.unwrap() >= 1_000_000, "{after:?}");
    assert!(after.latency_p99_us >= after.latency_p50_us);
}

/// The TUI's worker answers the NBD status at once while a read waits
/// for a slow server, and the status shows the read in flight.
#[test]
fn tui_status_is_live_while_a_read_waits() {
    use layerscope::ui::app::{Reply, Request};
    if !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("disk.raw"), vec![0x5au8; 1 << 20]).unwrap();
    let sock = d.path().join("slow.sock");
    let _slow = serve(
        d.path(),
        &[
            "nbdkit",
            "-f",
            "-r",
            "-U",
            sock.to_str().unwrap(),
            "--filter=delay",
            "file",
            "file=disk.raw",
            "delay-read=2",
        ],
        &socket_ready(sock.clone()),
    );
    let chain = layerscope::block::chain::open_nbd(&unix_uri(&sock), Options::default()).unwrap();
    let (tx, rx) = layerscope::ui::worker::spawn(layerscope::ui::worker::Worker::new(chain));
    tx.send(Request::Hex {
        as_of: 0,
        offset: 0,
        len: 256,
    })
    .unwrap();
    // Ask for the status until it shows the read in flight; it must come
    // before the read's reply.
    let mut seen_in_flight = false;
    for _ in 0..400 {
        tx.send(Request::Nbd).unwrap();
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            Reply::Nbd(n) if n.1.in_flight > 0 => {
                assert_eq!(format!("{:?}", n.1.state), "Ready");
                seen_in_flight = true;
                break;
            }
            Reply::Nbd(_) => std::thread::sleep(Duration::from_millis(5)),
            other => panic!("the read answered before the status showed it: {other:?}"),
        }
    }
    assert!(seen_in_flight, "no status showed the read in flight");
    // Then the read completes.
    loop {
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            Reply::Hex(h) => {
                assert!(h.bytes.iter().all(|&b| b == 0x5a));
                break;
            }
            Reply::Nbd(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn killed_server_fails_then_reconnects() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let flat = chain(dir);
    let sock = dir.join("nbd.sock");
    let args = [
        "qemu-nbd",
        "--read-only",
        "--persistent",
        "--socket",
        sock.to_str().unwrap(),
        "-f",
        "qcow2",
        "top.qcow2",
    ];
    let server = serve(dir, &args, &socket_ready(sock.clone()));
    let opts = Options {
        reconnect_attempts: 1,
        ..Options::default()
    };
    let client = NbdClient::connect(NbdUri::parse(&unix_uri(&sock)).unwrap(), opts).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    client.read_at(0, &mut buf).unwrap();
    assert!(buf == flat[..1 << 20]);
    drop(server);
    let _ = std::fs::remove_file(&sock);
    assert!(
        client.read_at(0, &mut buf).is_err(),
        "a read from a dead server must fail"
    );
    let s = client.stats().snapshot();
    assert_eq!(format!("{:?}", s.state), "Failed");
    let _back = serve(dir, &args, &socket_ready(sock.clone()));
    client.read_at(1 << 20, &mut buf).unwrap();
    assert!(buf == flat[1 << 20..2 << 20]);
    let s = client.stats().snapshot();
    assert_eq!(format!("{:?}", s.state), "Ready");
    assert!(s.reconnects >= 1);
}

#[test]
fn the_original_flow_a_filesystem_through_qemu_nbd() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(dir, &["mke2fs", "-q", "-t", "ext4", "base.img", "10M"]);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "base.img",
            "base.qcow2",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "base.qcow2",
            "layer.qcow2",
        ],
    );
    let sock = dir.join("nbd.sock");
    let _server = serve(
        dir,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "--socket",
            sock.to_str().unwrap(),
            "--format",
            "qcow2",
            "layer.qcow2",
        ],
        &socket_ready(sock.clone()),
    );
    // The ext4 superblock's magic (0xEF53, little-endian) at 1024 + 0x38.
    let magic = layerscope(
        dir,
        &[
            "read",
            &unix_uri(&sock),
            "--offset",
            "1080",
            "--length",
            "2",
        ],
    )
    .ok()
    .stdout;
    assert_eq!(magic, [0x53, 0xef]);
    let local = layerscope(dir, &["read", "layer.qcow2", "--length", "64K"])
        .ok()
        .stdout;
    let remote = layerscope(dir, &["read", &unix_uri(&sock), "--length", "64K"])
        .ok()
        .stdout;
    assert!(local == remote);
}

/// How the in-process server misbehaves after a correct handshake.
#[derive(Clone, Copy, Debug)]
enum Evil {
    WrongCookie,
    HugeChunk,
    ChunkOutsideRead,
    TruncatedThenClose,
    Stall,
    SimpleAfterStructured,
    EscapeInError,
    Garbage,
}

/// A fixed-newstyle server that agrees to structured replies and one
/// export of 1 MiB, then answers the first read per `evil`.
fn evil_server(listener: UnixListener, evil: Evil) {
    let Ok((mut s, _)) = listener.accept() else {
        return;
    };
    let be64 = |v: u64| v.to_be_bytes();
    let mut hello = Vec::new();
    hello.extend_from_slice(&be64(0x4e42_444d_4147_4943));
    hello.extend_from_slice(&be64(0x4948_4156_454f_5054));
    hello.extend_from_slice(&3u16.to_be_bytes());
    let _ = s.write_all(&hello);
    let mut flags = [0u8; 4];
    let _ = s.read_exact(&mut flags);
    loop {
        let mut h = [0u8; 16];
        if s.read_exact(&mut h).is_err() {
            return;
        }
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        let _ = s.read_exact(&mut data);
        let reply = |s: &mut std::os::unix::net::UnixStream, kind: u32, payload: &[u8]| {
            let mut r = Vec::new();
            r.extend_from_slice(&0x0003_e889_0455_65a9u64.to_be_bytes());
            r.extend_from_slice(&opt.to_be_bytes());
            r.extend_from_slice(&kind.to_be_bytes());
            r.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            r.extend_from_slice(payload);
            let _ = s.write_all(&r);
        };
        match opt {
            8 => reply(&mut s, 1, &[]),
            7 => {
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&(1u64 << 20).to_be_bytes());
                info.extend_from_slice(&3u16.to_be_bytes());
                reply(&mut s, 3, &info);
                reply(&mut s, 1, &[]);
                break;
            }
            _ => reply(&mut s, (1 << 31) | 1, &[]),
        }
    }
    let mut req = [0u8; 28];
    if s.read_exact(&mut req).is_err() {
        return;
    }
    let cookie = u64::from_be_bytes(req[8..16].try_into().unwrap());
    let offset = u64::from_be_bytes(req[16..24].try_into().unwrap());
    let chunk = |flags: u16, kind: u16, cookie: u64, payload: &[u8], declared: Option<u32>| {
        let mut r = Vec::new();
        r.extend_from_slice(&0x668e_33efu32.to_be_bytes());
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&cookie.to_be_bytes());
        r.extend_from_slice(&declared.unwrap_or(payload.len() as u32).to_be_bytes());
        r.extend_from_slice(payload);
        r
    };
    let mut data = offset.to_be_bytes().to_vec();
    data.extend_from_slice(&[7u8; 512]);
    let out = match evil {
        Evil::WrongCookie => chunk(1, 1, cookie ^ 0xdead, &data, None),
        Evil::HugeChunk => chunk(1, 1, cookie, &data[..8], Some(u32::MAX)),
        Evil::ChunkOutsideRead => {
            let mut far = (offset + (1 << 19)).to_be_bytes().to_vec();
            far.extend_from_slice(&[7u8; 512]);
            chunk(1, 1, cookie, &far, None)
        }
        Evil::TruncatedThenClose => {
            let mut c = chunk(1, 1, cookie, &data, None);
            c.truncate(c.len() - 300);
            c
        }
        Evil::Stall => {
            std::thread::sleep(Duration::from_secs(3));
            return;
        }
        Evil::SimpleAfterStructured => {
            let mut r = 0x6744_6698u32.to_be_bytes().to_vec();
            r.extend_from_slice(&0u32.to_be_bytes());
            r.extend_from_slice(&cookie.to_be_bytes());
            r.extend_from_slice(&[7u8; 512]);
            r
        }
        Evil::EscapeInError => {
            let msg = b"bad \x1b[2J\x07 day";
            let mut p = 5u32.to_be_bytes().to_vec();
            p.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            p.extend_from_slice(msg);
            chunk(1, (1 << 15) + 1, cookie, &p, None)
        }
        Evil::Garbage => vec![0x5a; 64],
    };
    let _ = s.write_all(&out);
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn hostile_server_replies_give_clear_errors() {
    for evil in [
        Evil::WrongCookie,
        Evil::HugeChunk,
        Evil::ChunkOutsideRead,
        Evil::TruncatedThenClose,
        Evil::Stall,
        Evil::SimpleAfterStructured,
        Evil::EscapeInError,
        Evil::Garbage,
    ] {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("evil.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || evil_server(listener, evil));
        let opts = Options {
            request_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            reconnect_attempts: 0,
            ..Options::default()
        };
        let client = NbdClient::connect(NbdUri::parse(&unix_uri(&sock)).unwrap(), opts).unwrap();
        assert_eq!(client.len(), 1 << 20);
        let start = Instant::now();
        let mut buf = vec![0u8; 512];
        let err = client
            .read_at(0, &mut buf)
            .expect_err(&format!("{evil:?} must fail"));
        let mut msg = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            msg.push_str(&format!(": {c}"));
            cause = c.source();
        }
        // A guard against a hang, not a timing figure: the request time
        // limit ends it far sooner, but a loaded CI machine may be slow.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{evil:?} took {:?}",
            start.elapsed()
        );
        assert!(
            !msg.chars().any(|c| c.is_control()),
            "{evil:?}: raw control characters in {msg:?}"
        );
        let expected = match evil {
            Evil::WrongCookie => "unknown cookie",
            Evil::HugeChunk | Evil::ChunkOutsideRead => "outside the read",
            Evil::TruncatedThenClose => "closed the connection in the middle of a reply",
            Evil::Stall => "no answer from the server within",
            Evil::SimpleAfterStructured => "simple reply",
            Evil::EscapeInError => "EIO): bad \\x1b[2J\\x07 day",
            Evil::Garbage => "reply magic",
        };
        assert!(msg.contains(expected), "{evil:?}: {msg}");
        drop(client);
        server.join().unwrap();
    }
}

/// Read-only data for the `nbd` crate's server; counts write attempts (a
/// read-only client must send none).
struct Fixture {
    data: std::io::Cursor<Vec<u8>>,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Read for Fixture {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.data.read(buf)
    }
}

impl Write for Fixture {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(std::io::ErrorKind::PermissionDenied.into())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Fixture {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.data.seek(to)
    }
}

#[test]
fn the_nbd_crates_old_style_server_is_read_through_the_fallback() {
    // Not a multiple of the 256 KiB request size, with a zero run.
    let mut data: Vec<u8> = (0..(3 << 20) + 4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    data[1 << 20..(1 << 20) + 70_000].fill(0);
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("crate.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (data, writes) = (data.clone(), writes.clone());
        // Serves every connection until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let (data, writes) = (data.clone(), writes.clone());
                std::thread::spawn(move || {
                    let export = nbd::server::handshake(&mut s, |_name| {
                        Ok(nbd::Export {
                            size: data.len() as u64,
                            readonly: true,
                            data: Fixture {
                                data: std::io::Cursor::new(data),
                                writes,
                            },
                            resizeable: false,
                            rotational: false,
                            send_trim: false,
                            send_flush: false,
                        })
                    });
                    if let Ok(fixture) = export {
                        let _ = nbd::server::transmission(&mut s, fixture);
                    }
                });
            }
        });
    }
    let uri = unix_uri(&sock);
    let client = NbdClient::connect(NbdUri::parse(&uri).unwrap(), Options::default()).unwrap();
    let info = client.info().clone();
    assert_eq!(info.handshake, "newstyle-export-name");
    assert!(!info.structured_replies);
    assert!(info.meta_contexts.is_empty());
    assert_eq!(info.size, data.len() as u64);
    // One call: many requests in flight, simple replies.
    let mut buf = vec![0xa5u8; data.len()];
    client.read_at(0, &mut buf).unwrap();
    assert!(buf == data, "read through the nbd crate's server differs");
    let extents = client.block_status(0, data.len() as u64).unwrap();
    assert_eq!(extents.len(), 1);
    assert_eq!(
        (extents[0].offset, extents[0].len, extents[0].status),
        (0, data.len() as u64, layerscope::block::Status::Data),
        "without block status everything is data"
    );
    drop(client);
    // The binary: read, nbd-info, map, exports.
    let dir = d.path();
    assert!(layerscope(dir, &["read", &uri]).ok().stdout == data);
    let info = layerscope(dir, &["nbd-info", "--json", &uri]).ok().json();
    assert_eq!(info["structured_replies"], false);
    assert_eq!(info["handshake"], "newstyle-export-name");
    assert_eq!(info["meta_contexts"], serde_json::json!([]));
    let map = layerscope(dir, &["map", "--json", &uri]).ok().json();
    assert_eq!(
        normalized(&map),
        [(0, data.len() as u64, 0, true, false, true)],
        "map without metadata contexts: all data"
    );
    let text = layerscope(dir, &["nbd-info", &uri]).ok().text();
    assert!(text.contains("structured replies: no"), "{text}");
    assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// How the in-process block-status server answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answers {
    /// Each request whole, in order.
    Plain,
    /// A prefix of each window (the depth context shorter than the
    /// allocation one), replies in reverse order.
    ShortAndReversed,
    /// A chunk for a request that was already answered in full.
    AfterDone,
    /// A depth chunk with no descriptor.
    NoDescriptor,
}

/// The server's disk: 1 MiB runs cycling through data in the top layer,
/// zeros in its backing file, and unallocated.
fn model(offset: u64) -> (u32, u32) {
    match (offset >> 20) % 3 {
        0 => (0, 1),
        1 => (2, 2),
        _ => (3, 0),
    }
}

/// Descriptors of `[offset, end)` for context 0 (flags) or 1 (depth).
fn descriptors(ctx: u32, offset: u64, end: u64) -> Vec<u8> {
    let mut p = ctx.to_be_bytes().to_vec();
    let mut pos = offset;
    while pos < end {
        let next = ((pos >> 20) + 1) << 20;
        let n = next.min(end) - pos;
        let (flags, depth) = model(pos);
        p.extend_from_slice(&(n as u32).to_be_bytes());
        p.extend_from_slice(&(if ctx == 0 { flags } else { depth }).to_be_bytes());
        pos += n;
    }
    p
}

/// A structured-reply server of a 512 MiB export with both metadata
/// contexts, answering block status per `answers`.
fn status_server(listener: UnixListener, answers: Answers) {
    let Ok((mut s, _)) = listener.accept() else {
        return;
    };
    let mut hello = 0x4e42_444d_4147_4943u64.to_be_bytes().to_vec();
    hello.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
    hello.extend_from_slice(&3u16.to_be_bytes());
    s.write_all(&hello).unwrap();
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags).unwrap();
    let size = 512u64 << 20;
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h).unwrap();
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let mut data = vec![0u8; u32::from_be_bytes(h[12..16].try_into().unwrap()) as usize];
        s.read_exact(&mut data).unwrap();
        let reply = |s: &mut std::os::unix::net::UnixStream, kind: u32, payload: &[u8]| {
            let mut r = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
            r.extend_from_slice(&opt.to_be_bytes());
            r.extend_from_slice(&kind.to_be_bytes());
            r.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            r.extend_from_slice(payload);
            s.write_all(&r).unwrap();
        };
        match opt {
            8 => reply(&mut s, 1, &[]),
            10 => {
                for (id, name) in [(0u32, "base:allocation"), (1, "qemu:allocation-depth")] {
                    let mut p = id.to_be_bytes().to_vec();
                    p.extend_from_slice(name.as_bytes());
                    reply(&mut s, 4, &p);
                }
                reply(&mut s, 1, &[]);
            }
            7 => {
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&3u16.to_be_bytes());
                reply(&mut s, 3, &info);
                reply(&mut s, 1, &[]);
                break;
            }
            _ => reply(&mut s, (1 << 31) | 1, &[]),
        }
    }
    let chunk = |flags: u16, cookie: u64, payload: &[u8]| {
        let mut r = 0x668e_33efu32.to_be_bytes().to_vec();
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&5u16.to_be_bytes());
        r.extend_from_slice(&cookie.to_be_bytes());
        r.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        r.extend_from_slice(payload);
        r
    };
    loop {
        // Every request that arrives together, then the answers.
        let mut requests = Vec::new();
        s.set_read_timeout(None).unwrap();
        loop {
            let mut req = [0u8; 28];
            match s.read_exact(&mut req) {
                Ok(()) => {}
                Err(_) if !requests.is_empty() => break,
                Err(_) => return,
            }
            let kind = u16::from_be_bytes([req[6], req[7]]);
            if kind == 2 {
                return;
            }
            let cookie = u64::from_be_bytes(req[8..16].try_into().unwrap());
            let offset = u64::from_be_bytes(req[16..24].try_into().unwrap());
            let len = u64::from(u32::from_be_bytes(req[24..28].try_into().unwrap()));
            requests.push((cookie, offset, len));
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let mut out = Vec::new();
        match answers {
            Answers::Plain => {
                for &(cookie, offset, len) in &requests {
                    out.extend(chunk(0, cookie, &descriptors(0, offset, offset + len)));
                    out.extend(chunk(1, cookie, &descriptors(1, offset, offset + len)));
                }
            }
            Answers::ShortAndReversed => {
                for &(cookie, offset, len) in requests.iter().rev() {
                    // Three quarters of the window, the depths 512 KiB less.
                    let (alloc, depth) = match len {
                        0..=0x10_0000 => (len, len),
                        _ => (len / 4 * 3, len / 4 * 3 - (1 << 19)),
                    };
                    out.extend(chunk(0, cookie, &descriptors(1, offset, offset + depth)));
                    out.extend(chunk(1, cookie, &descriptors(0, offset, offset + alloc)));
                }
            }
            Answers::NoDescriptor => {
                let (cookie, offset, len) = requests[0];
                out.extend(chunk(0, cookie, &descriptors(0, offset, offset + len)));
                out.extend(chunk(1, cookie, &1u32.to_be_bytes()));
            }
            Answers::AfterDone => {
                let (cookie, offset, len) = requests[0];
                out.extend(chunk(1, cookie, &descriptors(0, offset, offset + len)));
                out.extend(chunk(1, cookie, &descriptors(1, offset, offset + len)));
            }
        }
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

/// Block status asked in windows gives one map whatever the shape of the
/// answers (short, out of order); a chunk after a request's last one is a
/// protocol error, not a hang.
#[test]
fn block_status_windows_join_whatever_the_answers() {
    let map_with = |answers: Answers| {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("bs.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || status_server(listener, answers));
        let opts = Options {
            request_timeout: Duration::from_secs(5),
            reconnect_attempts: 0,
            ..Options::default()
        };
        let client = NbdClient::connect(NbdUri::parse(&unix_uri(&sock)).unwrap(), opts).unwrap();
        let map = client.map_entries(0, client.len()).map(|m| {
            assert!(m.stopped.is_none(), "{:?}", m.stopped);
            m.entries
        });
        drop(client);
        server.join().unwrap();
        map
    };
    let plain = map_with(Answers::Plain).unwrap();
    // One entry per 1 MiB run: neighbours always differ.
    assert_eq!(plain.len(), 512);
    assert_eq!(plain.iter().map(|e| e.length).sum::<u64>(), 512 << 20);
    let short = map_with(Answers::ShortAndReversed).unwrap();
    let first_difference = short.iter().zip(&plain).position(|(a, b)| a != b);
    assert!(
        short.len() == plain.len() && first_difference.is_none(),
        "short, reversed answers give another map: {} vs {} entries, first difference {:?}",
        short.len(),
        plain.len(),
        first_difference.map(|i| (short[i], plain[i]))
    );
    for (answers, expected) in [
        (Answers::AfterDone, "after its last chunk"),
        (Answers::NoDescriptor, "block status chunk of 4 bytes"),
    ] {
        let err = map_with(answers).unwrap_err();
        let mut msg = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            msg.push_str(&format!(": {c}"));
            cause = c.source();
        }
        assert!(msg.contains(expected), "{answers:?}: {msg}");
    }
}
