//! layerscope never writes: after every command, every layer file has the
//! same bytes and the same modification time.
use std::path::Path;

use crate::util::*;

fn fingerprint(dir: &Path, files: &[&str]) -> Vec<(String, std::time::SystemTime)> {
    files
        .iter()
        .map(|f| {
            let p = dir.join(f);
            (
                sha256(&p),
                std::fs::metadata(&p).unwrap().modified().unwrap(),
            )
        })
        .collect()
}

#[test]
fn commands_leave_every_layer_untouched() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("base.raw"), vec![0xabu8; 4 << 20]).unwrap();
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "mid.qcow2",
        ],
    );
    qemu_io(
        dir,
        "mid.qcow2",
        &["write -c -P 1 0 64k", "write -z 1M 64k"],
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
    qemu_io(dir, "top.qcow2", &["write -P 2 2M 64k"]);
    // Mark the top dirty, as after a crash: a writer would "repair" it.
    let mut top = std::fs::read(dir.join("top.qcow2")).unwrap();
    top[79] |= 1;
    std::fs::write(dir.join("top.qcow2"), top).unwrap();
    let files = ["base.raw", "mid.qcow2", "top.qcow2"];
    let before = fingerprint(dir, &files);
    std::thread::sleep(std::time::Duration::from_millis(20));
    for args in [
        vec!["chain", "top.qcow2"],
        vec!["chain", "--json", "top.qcow2"],
        vec!["map", "top.qcow2"],
        vec!["map", "--json", "top.qcow2"],
        vec!["read", "top.qcow2"],
        vec![
            "read",
            "--hits",
            "top.qcow2",
            "--offset",
            "1M",
            "--length",
            "64K",
        ],
        vec!["map", "--format", "raw", "top.qcow2"],
    ] {
        let run = layerscope(dir, &args).ok();
        assert!(!run.stdout.is_empty(), "{args:?} printed nothing");
        assert_eq!(fingerprint(dir, &files), before, "{args:?} changed a layer");
    }
    let chain = layerscope(dir, &["chain", "--json", "top.qcow2"])
        .ok()
        .json();
    assert_eq!(chain[0]["dirty-flag"], true);
}

/// Every kind of layer (v2, extended L2, zstd-compressed, 4 KiB clusters,
/// in another directory) and commands that fail half-way (a backing loop, a
/// missing backing file) leave every file as it was.
#[test]
fn every_kind_of_layer_and_failing_opens_are_untouched() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("base")).unwrap();
    std::fs::create_dir(dir.join("vm")).unwrap();
    let create = |args: &[&str]| {
        let mut a = vec!["qemu-img", "create", "-q", "-f", "qcow2"];
        a.extend(args);
        sh(dir, &a);
    };
    create(&["-o", "compat=0.10", "base/v2.qcow2", "8M"]);
    qemu_io(dir, "base/v2.qcow2", &["write -P 1 0 1M"]);
    create(&[
        "-o",
        "extended_l2=on",
        "-b",
        "../base/v2.qcow2",
        "-F",
        "qcow2",
        "vm/ext.qcow2",
    ]);
    qemu_io(
        dir,
        "vm/ext.qcow2",
        &["write -P 2 0x1000 0x1000", "write -z 0x8000 0x2000"],
    );
    create(&[
        "-o",
        "compression_type=zstd",
        "-b",
        "ext.qcow2",
        "-F",
        "qcow2",
        "vm/zstd.qcow2",
    ]);
    qemu_io(dir, "vm/zstd.qcow2", &["write -c -P 3 0x100000 64k"]);
    create(&[
        "-o",
        "cluster_size=4096",
        "-b",
        "zstd.qcow2",
        "-F",
        "qcow2",
        "vm/top.qcow2",
    ]);
    qemu_io(dir, "vm/top.qcow2", &["write -P 4 0x200800 0x1000"]);
    // A loop and an orphan, for failing commands.
    create(&["a.qcow2", "1M"]);
    create(&["-b", "a.qcow2", "-F", "qcow2", "b.qcow2"]);
    sh(
        dir,
        &[
            "qemu-img", "rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2",
        ],
    );
    create(&[
        "-u",
        "-b",
        "gone.qcow2",
        "-F",
        "qcow2",
        "orphan.qcow2",
        "1M",
    ]);
    let files = [
        "base/v2.qcow2",
        "vm/ext.qcow2",
        "vm/zstd.qcow2",
        "vm/top.qcow2",
        "a.qcow2",
        "b.qcow2",
        "orphan.qcow2",
    ];
    let before = fingerprint(dir, &files);
    std::thread::sleep(std::time::Duration::from_millis(20));
    for cmd in [&["chain", "--json"][..], &["map", "--json"], &["read"]] {
        for image in ["vm/top.qcow2", "b.qcow2", "orphan.qcow2"] {
            let mut args = cmd.to_vec();
            args.push(image);
            let run = layerscope(dir, &args);
            assert_eq!(
                run.code,
                if image == "vm/top.qcow2" { 0 } else { 1 },
                "{args:?}"
            );
            assert_eq!(fingerprint(dir, &files), before, "{args:?} changed a file");
        }
    }
}
