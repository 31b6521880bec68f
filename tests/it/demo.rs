//! The embedded demo chain and its generator: `assets/make-demo.sh` run
//! again gives the committed files byte for byte (with the tools recorded in
//! `assets/demo/TOOLS`), the overlays are thin with relative backing names,
//! and the files stay small enough to embed.
use std::path::Path;

use crate::util::*;

fn assets() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/assets"))
}

const FILES: [&str; 3] = ["base.qcow2", "update.qcow2", "top.qcow2"];

fn first_line(args: &[&str]) -> String {
    let out = sh(Path::new("."), args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().unwrap_or("").to_owned()
}

#[test]
fn make_demo_reproduces_the_committed_chain() {
    if !need("qemu-img") || !need("qemu-io") || !need("mke2fs") || !need("debugfs") {
        return;
    }
    if !need("python3") {
        return;
    }
    let recorded = std::fs::read_to_string(assets().join("demo/TOOLS")).unwrap();
    let here = format!(
        "{}\n{}\n",
        first_line(&["qemu-img", "--version"]),
        first_line(&["mke2fs", "-V"])
    );
    if recorded != here {
        // Other tool versions lay bytes out otherwise; that is no bug.
        eprintln!("SKIP: the demo was made with\n{recorded}this machine has\n{here}");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    sh(
        d.path(),
        &[
            "bash",
            assets().join("make-demo.sh").to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    for f in FILES {
        assert!(
            sha256(&out.join(f)) == sha256(&assets().join("demo").join(f)),
            "assets/make-demo.sh makes another {f} than the committed one: \
             run it and commit assets/demo"
        );
    }
}

#[test]
fn demo_overlays_are_thin_small_and_relative() {
    if !need("qemu-img") {
        return;
    }
    let demo = assets().join("demo");
    let total: u64 = FILES
        .iter()
        .map(|f| std::fs::metadata(demo.join(f)).unwrap().len())
        .sum();
    assert!(total < 2 << 20, "the demo files take {total} bytes");
    let d = tempfile::tempdir().unwrap();
    for f in FILES {
        std::fs::copy(demo.join(f), d.path().join(f)).unwrap();
    }
    let info = qemu_info_chain(d.path(), "top.qcow2");
    assert_eq!(info[0]["backing-filename"], "update.qcow2");
    assert_eq!(info[1]["backing-filename"], "base.qcow2");
    let map = qemu_map(d.path(), "top.qcow2");
    let entries = map.as_array().unwrap();
    let held = |depth: u64, pred: &dyn Fn(&serde_json::Value) -> bool| -> u64 {
        entries
            .iter()
            .filter(|e| e["depth"] == depth && e["present"] == true && pred(e))
            .map(|e| e["length"].as_u64().unwrap())
            .sum()
    };
    // update: compressed clusters only; top: plain data and one zero cluster;
    // each a small part of the 16 MiB disk.
    assert!(held(1, &|e| e["compressed"] == true) > 0);
    assert_eq!(held(1, &|e| e["compressed"] == false), 0);
    assert!(held(0, &|e| e["data"] == true) > 0);
    assert_eq!(held(0, &|e| e["zero"] == true && e["data"] == false), 65536);
    assert!(held(0, &|_| true) + held(1, &|_| true) < 2 << 20);
}
