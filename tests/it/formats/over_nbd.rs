//! A format over a protocol: the files of a chain served as bytes by
//! `nbdkit file dir=DIR` (one export per file), read with `-f FMT` or by
//! probing the export, backing files opened as sibling exports. Oracle:
//! the same chain read locally (itself compared with qemu in the other
//! tests of this module) and qemu-img on the local files.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::writer::{self, Writes};
use super::*;

/// nbdkit, killed when dropped.
struct Kit(Child);

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nbdkit -r [filters] file dir=DIR [params]` on a socket in `cwd`.
fn serve_dir(
    cwd: &Path,
    sock: &str,
    filters: &[&str],
    params: &[&str],
    served: &Path,
) -> (Kit, String) {
    let sock: PathBuf = cwd.join(sock);
    let dir_arg = format!("dir={}", served.display());
    let mut args = vec!["-f", "-r", "-U", sock.to_str().unwrap()];
    args.extend_from_slice(filters);
    args.extend(["file", dir_arg.as_str()]);
    args.extend_from_slice(params);
    let child = Command::new("nbdkit")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kit = Kit(child);
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nbdkit did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (kit, format!("socket={}", sock.display()))
}

fn uri(export: &str, socket: &str) -> String {
    format!("nbd+unix:///{export}?{socket}")
}

/// A directory holding a qcow2 overlay on a VMDK base, a qcow2 overlay on
/// a VHDX base, and a VDI differencing image found by UUID.
fn chains(dir: &Path) -> PathBuf {
    let s = dir.join("images");
    std::fs::create_dir(&s).unwrap();
    sh(
        &s,
        &["qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "32M"],
    );
    qemu_io_fmt(
        &s,
        "vmdk",
        "base.vmdk",
        &[
            "write -P 0x11 0 0x200000",
            "write -P 0x12 0x1000000 0x10000",
        ],
    );
    sh(
        &s,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            "top.qcow2",
        ],
    );
    qemu_io(
        &s,
        "top.qcow2",
        &[
            "write -P 0x13 0x100000 0x20000",
            "write -z 0x1000000 0x1000",
        ],
    );
    sh(
        &s,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M",
            "base.vhdx",
            "16M",
        ],
    );
    qemu_io_fmt(
        &s,
        "vhdx",
        "base.vhdx",
        &["write -P 0x21 0x300000 0x100000"],
    );
    // No -F: the backing export's format is probed, as a local file's.
    sh(
        &s,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.vhdx",
            "-F",
            "vhdx",
            "onvhdx.qcow2",
        ],
    );
    qemu_io(&s, "onvhdx.qcow2", &["write -P 0x22 0x380000 0x1000"]);
    sh(
        &s,
        &["qemu-img", "create", "-q", "-f", "vdi", "base.vdi", "8M"],
    );
    qemu_io_fmt(&s, "vdi", "base.vdi", &["write -P 0x31 0 0x200000"]);
    let base = std::fs::read(s.join("base.vdi")).unwrap();
    let flat = s.join("base.vdi.flat");
    sh(
        &s,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            "base.vdi",
            flat.to_str().unwrap(),
        ],
    );
    let base_flat = std::fs::read(&flat).unwrap();
    std::fs::remove_file(&flat).unwrap();
    let writes: Writes = vec![(0x100200, writer::pattern(0x400, 7))];
    let child = writer::vdi_differencing(&base, &base_flat, [0xb1; 16], &writes, &[]);
    std::fs::write(s.join("child.vdi"), child).unwrap();
    s
}

#[test]
fn chains_served_by_nbdkit_from_a_directory_read_like_the_local_files() {
    if !need("qemu-img") || !need("qemu-io") || !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let served = chains(dir);
    let (_kit, socket) = serve_dir(dir, "kit.sock", &[], &[], &served);
    for (image, fmt) in [
        ("top.qcow2", "qcow2"),
        ("onvhdx.qcow2", "qcow2"),
        ("child.vdi", "vdi"),
    ] {
        let local = format!("images/{image}");
        let remote = uri(image, &socket);
        let want = layerscope(dir, &["read", &local]).ok().stdout;
        // Named with -f, and probed from the export's first bytes.
        let named = layerscope(dir, &["read", "-f", fmt, &remote]).ok().stdout;
        assert!(named == want, "{image}: read -f {fmt} over NBD");
        let probed = layerscope(dir, &["read", &remote]).ok().stdout;
        assert!(probed == want, "{image}: read over NBD, probed");
        let map = layerscope(dir, &["map", "--json", "-f", fmt, &remote])
            .ok()
            .json();
        assert_eq!(
            map,
            layerscope(dir, &["map", "--json", &local]).ok().json(),
            "{image}: map"
        );
        let ours = layerscope(dir, &["chain", "--json", &remote]).ok().json();
        let theirs = layerscope(dir, &["chain", "--json", &local]).ok().json();
        let (ours, theirs) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
        assert_eq!(ours.len(), theirs.len(), "{image}: layers");
        for (o, t) in ours.iter().zip(theirs) {
            assert_eq!(o["format"], t["format"], "{image}");
            assert_eq!(o["virtual-size"], t["virtual-size"], "{image}");
        }
        assert_eq!(ours[0]["filename"], remote.as_str());
    }
    // qemu reads the qcow2-over-VMDK chain as we do.
    let qemu = dir.join("top.flat");
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            "images/top.qcow2",
            qemu.to_str().unwrap(),
        ],
    );
    let ours = layerscope(dir, &["read", &uri("top.qcow2", &socket)])
        .ok()
        .stdout;
    assert!(
        ours == std::fs::read(&qemu).unwrap(),
        "top.qcow2 over NBD vs qemu-img convert"
    );
    // The chain text says the format was probed from the export.
    let text = layerscope(dir, &["chain", &uri("top.qcow2", &socket)])
        .ok()
        .text();
    assert!(text.contains("detected"), "{text}");
    // A missing backing export reads like a missing backing file.
    std::fs::remove_file(served.join("base.vmdk")).unwrap();
    refused(
        dir,
        &["map", "-f", "qcow2", &uri("top.qcow2", &socket)],
        &["base.vmdk"],
    );
    // -f raw keeps the old meaning: the export is the disk.
    let raw = layerscope(dir, &["read", "-f", "raw", &uri("top.qcow2", &socket)])
        .ok()
        .stdout;
    assert!(
        raw == std::fs::read(served.join("top.qcow2")).unwrap(),
        "-f raw: the export's bytes"
    );
}

#[test]
fn a_slow_server_still_reads_correctly() {
    if !need("qemu-img") || !need("qemu-io") || !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let served = chains(dir);
    let (_kit, socket) = serve_dir(
        dir,
        "slow.sock",
        &["--filter=delay"],
        &["rdelay=5ms"],
        &served,
    );
    let want = layerscope(dir, &["read", "images/top.qcow2"]).ok().stdout;
    let got = layerscope(dir, &["read", "-f", "qcow2", &uri("top.qcow2", &socket)])
        .ok()
        .stdout;
    assert!(got == want, "top.qcow2 over a delaying nbdkit");
    let map = layerscope(dir, &["map", "--json", &uri("top.qcow2", &socket)])
        .ok()
        .json();
    assert_eq!(
        map,
        layerscope(dir, &["map", "--json", "images/top.qcow2"])
            .ok()
            .json()
    );
}
