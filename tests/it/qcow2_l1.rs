//! The L1 table is read a slice at a time (512 entries from a local file)
//! as lookups reach it, with a bounded cache of slices. A chain whose
//! tables span hundreds of slices (more than the cache holds), with data
//! on both sides of slice boundaries, runs of empty slices and entries
//! near the end of the disk: `map --json` equals `qemu-img map`, and
//! windows of `read` equal `qemu-io read`.
use std::path::Path;

use crate::util::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io")
}

fn create(dir: &Path, name: &str, size: &str, backing: Option<&str>) {
    let mut args = vec![
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
    ];
    if let Some(b) = backing {
        args.extend(["-b", b, "-F", "qcow2"]);
    }
    args.extend([name, size]);
    sh(dir, &args);
}

fn window(dir: &Path, image: &str, off: u64, len: u64) {
    let theirs = qemu_io_read(dir, image, off, len);
    let ours = layerscope(
        dir,
        &[
            "read",
            image,
            "--offset",
            &off.to_string(),
            "--length",
            &len.to_string(),
        ],
    )
    .ok()
    .stdout;
    assert!(
        ours == theirs,
        "{image}: window at {off:#x} differs from qemu-io read"
    );
}

#[test]
fn a_chain_whose_l1_tables_span_hundreds_of_slices_matches_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // 4 KiB clusters: an L1 entry maps 2 MiB, a 512-entry slice 1 GiB;
    // 300 GiB is 300 slices per table, more than the 256 cached.
    const G: u64 = 1 << 30;
    create(dir, "base.qcow2", "300G", None);
    qemu_io(
        dir,
        "base.qcow2",
        &[
            "write -P 1 0 64k",
            // The last cluster of slice 0 and the first of slice 1.
            &format!("write -P 2 {} 4k", G - 4096),
            &format!("write -P 3 {G} 4k"),
            &format!("write -P 4 {} 8k", 150 * G),
            &format!("write -P 5 {} 4k", 300 * G - 4096),
        ],
    );
    create(dir, "top.qcow2", "300G", Some("base.qcow2"));
    qemu_io(
        dir,
        "top.qcow2",
        &[
            // Across the slice 0/1 boundary.
            &format!("write -P 6 {} 16k", G - 8192),
            &format!("write -z {} 1M", 200 * G),
            &format!("write -c -P 7 {} 64k", 250 * G),
            &format!("write -P 8 {} 4k", 299 * G + 2 * 1024 * 1024),
            &format!("write -P 9 {} 4k", 300 * G - 4096),
        ],
    );
    for image in ["base.qcow2", "top.qcow2"] {
        let ours = layerscope(dir, &["map", "--json", image]).ok().json();
        assert_eq!(ours, qemu_map(dir, image), "map --json of {image}");
    }
    for (off, len) in [
        (0, 65536),
        (G - 65536, 131072),
        (150 * G, 65536),
        (200 * G - 4096, 1 << 20),
        (250 * G, 65536),
        (299 * G, 4 << 20),
        (300 * G - 65536, 65536),
    ] {
        window(dir, "top.qcow2", off, len);
    }
}
