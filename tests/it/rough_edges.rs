//! The CLI's rough edges of issue 15, each against what the tools say:
//! `cat --json` and `<0>` refused with messages about the input, `diff`
//! of a one-layer image, binary refused on a terminal (through
//! `script`'s pty), notes on stderr, the default NBD export named (as
//! nbdinfo lists it), `blocks` with logical ranges equal to debugfs's
//! extents and compressed/zero runs where `qemu-img map` has them.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::util::*;

/// A small ext4 image with a text file and a binary one.
fn small(dir: &Path) {
    let t = dir.join("t");
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(t.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(t.join("sub/bin"), b"x\0y\x1b[2J").unwrap();
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-d",
            t.to_str().unwrap(),
            "a.raw",
            "16M",
        ],
    );
}

#[test]
fn wrong_input_is_named_as_such() {
    if !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    small(dir);
    let r = layerscope(dir, &["cat", "--json", "a.raw", "/a.txt"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.is_empty() && r.stderr.contains("cat has no --json"),
        "{}",
        r.stderr
    );
    let r = layerscope(dir, &["stat", "a.raw", "<0>"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("<0>: no such inode") && !r.stderr.contains("corrupt"),
        "{}",
        r.stderr
    );
    let r = layerscope(dir, &["diff", "a.raw"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("one layer") && !r.stderr.contains("--from"),
        "{}",
        r.stderr
    );
    // qemu-img agrees it is one layer.
    assert_eq!(qemu_info_chain(dir, "a.raw").as_array().unwrap().len(), 1);
}

/// Runs layerscope with stdout on a pty (`script`), returning what the
/// terminal got and the exit status.
fn on_tty(dir: &Path, args: &str) -> (String, i32) {
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let out = Command::new("script")
        .args(["-qec", &format!("{bin} {args}"), "/dev/null"])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn binary_is_not_written_to_a_terminal() {
    if !need("mke2fs") || !need("script") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    small(dir);
    let (text, code) = on_tty(dir, "cat a.raw /sub/bin");
    assert_ne!(code, 0);
    assert!(
        text.contains("binary content") && !text.contains("\x1b[2J"),
        "{text:?}"
    );
    let (text, code) = on_tty(dir, "cat a.raw /sub/bin --force");
    assert_eq!(code, 0);
    assert!(text.contains("\x1b[2J"), "{text:?}");
    let (text, code) = on_tty(dir, "cat a.raw /a.txt");
    assert_eq!((text.trim_end(), code), ("hello", 0));
    // A directory's blocks are binary too.
    let (text, code) = on_tty(dir, "cat a.raw /sub");
    assert!(code != 0 && text.contains("binary content"), "{text:?}");
    let (text, code) = on_tty(dir, "read a.raw --length 16");
    assert!(code != 0 && text.contains("--hex"), "{text:?}");
    // Into a pipe, the bytes as they are.
    assert_eq!(
        layerscope(dir, &["cat", "a.raw", "/sub/bin"]).ok().stdout,
        b"x\0y\x1b[2J"
    );
}

#[test]
fn notes_go_to_stderr() {
    let d = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/top.qcow2");
    let r = layerscope(d.path(), &["diff", demo.to_str().unwrap()]).ok();
    assert!(!r.text().contains("note:"), "{}", r.text());
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("layerscope: note: ")),
        "{}",
        r.stderr
    );
    assert!(r.text().contains("change(s) from layer 1 to layer 2"));
}

#[test]
fn the_default_export_is_named() {
    if !need("qemu-nbd") || !need("nbdinfo") || !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    small(dir);
    let sock = dir.join("s.sock");
    let mut child = Command::new("qemu-nbd")
        .args(["--read-only", "--persistent", "-f", "raw", "-k"])
        .arg(&sock)
        .arg("a.raw")
        .current_dir(dir)
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !sock.exists() && t0.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let theirs = sh(dir, &["nbdinfo", "--list", "--json", &uri]).stdout;
    let theirs: serde_json::Value = serde_json::from_slice(&theirs).unwrap();
    let text = layerscope(dir, &["exports", &uri]).text();
    let json = layerscope(dir, &["exports", "--json", &uri]).json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(theirs["exports"][0]["export-name"], "");
    assert_eq!(json[0]["name"], "");
    assert_eq!(text, "\"\" (the default export)\n");
}

/// debugfs `stat`'s extents of a file: (logical range, physical range).
fn debugfs_extents(dir: &Path, image: &str, path: &str) -> BTreeSet<(String, String)> {
    let out = sh(dir, &["debugfs", "-R", &format!("stat {path}"), image]).stdout;
    let text = String::from_utf8_lossy(&out);
    let ext = text.split("EXTENTS:").nth(1).unwrap();
    ext.split(", ")
        .filter_map(|e| {
            let e = e.trim();
            // "(0-3):1172-1175" or "(4):1180"; skip index nodes "(ETB0):..."
            let (l, p) = e.strip_prefix('(')?.split_once("):")?;
            (!l.starts_with("ETB")).then(|| (l.to_owned(), p.to_owned()))
        })
        .collect()
}

#[test]
fn blocks_has_logical_ranges_and_run_kinds() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "b", "32M", 24);
    // A fragmented file: written in pieces between others.
    let frag: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("frag"), &frag).unwrap();
    debugfs_w(
        dir,
        "b.raw",
        &format!("write {} /frag\n", dir.join("frag").display()),
    );
    for p in ["/frag", "/d4/s1/f4.bin"] {
        let want = debugfs_extents(dir, "b.raw", p);
        assert!(!want.is_empty());
        let text = layerscope(dir, &["blocks", "b.raw", p]).ok().text();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("logical"));
        // Runs split where the serving layer changes; a raw image is one
        // layer, so each row is one debugfs extent.
        let got: BTreeSet<(String, String)> = lines
            .filter(|l| l.ends_with("data"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_owned(), f[1].to_owned())
            })
            .collect();
        assert_eq!(got, want, "{p}: {text}");
    }
    // Compressed and zero clusters, where qemu-img map says so.
    sh(
        dir,
        &[
            "qemu-img", "convert", "-c", "-O", "qcow2", "b.raw", "c.qcow2",
        ],
    );
    let text = layerscope(dir, &["blocks", "c.qcow2", "/d4/s1/f4.bin"])
        .ok()
        .text();
    let map = qemu_map(dir, "c.qcow2");
    assert!(
        map.as_array()
            .unwrap()
            .iter()
            .any(|e| e["compressed"].as_bool() == Some(true)),
        "qemu-img map shows no compressed cluster"
    );
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.ends_with("data, compressed")),
        "{text}"
    );
    sh(
        dir,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", "c.qcow2", "-F", "qcow2", "z.qcow2",
        ],
    );
    let rows = layerscope(dir, &["blocks", "--json", "c.qcow2", "/d4/s1/f4.bin"])
        .ok()
        .json();
    // The cluster holding the file's first block, whole: a zero cluster.
    let first = (rows[0]["physical"].as_u64().unwrap() * 4096) & !0xffff;
    qemu_io(dir, "z.qcow2", &[&format!("write -z {first} 65536")]);
    let map = qemu_map(dir, "z.qcow2");
    let e = map
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["start"].as_u64().unwrap() <= first
                && first < e["start"].as_u64().unwrap() + e["length"].as_u64().unwrap()
        })
        .unwrap();
    assert_eq!(
        (e["zero"].as_bool(), e["depth"].as_u64()),
        (Some(true), Some(0))
    );
    // By inode number: the zeroed cluster may hold the directory's block.
    let stat = sh(dir, &["debugfs", "-R", "stat /d4/s1/f4.bin", "b.raw"]).stdout;
    let stat = String::from_utf8_lossy(&stat);
    let ino: u64 = stat
        .split("Inode: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let text = layerscope(dir, &["blocks", "z.qcow2", &format!("<{ino}>")])
        .ok()
        .text();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .ends_with("layer 1   data, zero"),
        "{text}"
    );
}

/// `render --paths name|redacted`: the same chain in two directories
/// renders the same frame, so snapshots are portable; as given, the
/// frames name the directories.
#[test]
fn render_paths_make_frames_portable() {
    if !need("qemu-img") || !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut frames = Vec::new();
    for dir in ["first-place", "another/deeper/place"] {
        let at = d.path().join(dir);
        std::fs::create_dir_all(&at).unwrap();
        mkfs(&at, "base", "8M", 5);
        sh(
            &at,
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
            &at,
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
                "top.qcow2",
            ],
        );
        let top = at.join("top.qcow2");
        let top = top.to_str().unwrap();
        let frame = |style: &str| {
            layerscope(
                d.path(),
                &[
                    "render", top, "--size", "120x40", "--keys", "Tab", "--paths", style,
                ],
            )
            .ok()
            .text()
        };
        let (given, name, redacted) = (frame("as-given"), frame("name"), frame("redacted"));
        assert!(given.contains(dir.rsplit('/').next().unwrap()), "{given}");
        for f in [&name, &redacted] {
            assert!(!f.contains("place"), "{f}");
        }
        assert!(name.contains("top.qcow2"), "{name}");
        assert!(
            !redacted.contains("top.qcow2") && redacted.contains("layer 1"),
            "{redacted}"
        );
        frames.push((given, name, redacted));
    }
    assert_ne!(frames[0].0, frames[1].0);
    assert_eq!(frames[0].1, frames[1].1, "--paths name");
    assert_eq!(frames[0].2, frames[1].2, "--paths redacted");
}
