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
