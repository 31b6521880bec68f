//! VHD (vpc): fixed and dynamic disks made by qemu-img, the real images of
//! qemu's iotests, differencing disks from the test-side writer, and
//! hostile variants.
use std::path::Path;

use super::writer::{self, Writes};
use super::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io")
}

fn writes_for(dir: &Path, image: &str, fmt: &str) {
    qemu_io_fmt(
        dir,
        fmt,
        image,
        &[
            "write -P 0x61 0x10000 0x30000",
            "write -P 0x62 0x3ff000 0x2000",
            "write -P 0x63 0x1234400 0x1e00",
        ],
    );
}

#[test]
fn fixed_and_dynamic_disks_agree_with_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // 100 MB does not fall on a CHS geometry: qemu rounds the size up.
    for (name, opts) in [
        ("dyn.vhd", "subformat=dynamic"),
        ("fixed.vhd", "subformat=fixed"),
        ("forced.vhd", "subformat=dynamic,force_size=on"),
    ] {
        sh(
            dir,
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                opts,
                name,
                "100000000",
            ],
        );
        writes_for(dir, name, "vpc");
    }
    check(dir, "dyn.vhd", None);
    check(dir, "forced.vhd", None);
    // qemu probes a fixed VHD (footer at the end) as raw: compare with -f.
    check(dir, "fixed.vhd", Some("vpc"));
    let info = layerscope(dir, &["chain", "fixed.vhd"]).ok().text();
    assert!(info.contains("qemu probes such a file as raw"), "{info}");
    check_map(dir, "fixed.vhd", Some("vpc"));
    // A qcow2 overlay on a dynamic VHD.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "dyn.vhd",
            "-F",
            "vpc",
            "top.qcow2",
        ],
    );
    qemu_io(dir, "top.qcow2", &["write -P 0x64 0x20000 0x1000"]);
    check(dir, "top.qcow2", None);
}

#[test]
fn the_qemu_iotests_images() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    if corpus_image(dir, "d2v-zerofilled.vhd").is_none() {
        return;
    }
    // Disk2vhd (size from the footer), Hyper-V and Virtual PC (127 GiB,
    // one from CHS, one from the footer).
    check(dir, "d2v-zerofilled.vhd", None);
    for name in ["hyperv2012r2-dynamic.vhd", "virtualpc-dynamic.vhd"] {
        corpus_image(dir, name).unwrap();
        check_map(dir, name, None);
        check_chain(dir, name, None);
        check_hits_head(dir, name);
    }
    corpus_image(dir, "afl5.img").unwrap();
    refused(
        dir,
        &["map", "afl5.img"],
        &["afl5.img", "max table entries too large (1073741825)"],
    );
}

/// The first 4 MiB of a huge, empty image read the same as qemu's.
fn check_hits_head(dir: &Path, name: &str) {
    sh(
        dir,
        &[
            "qemu-img",
            "dd",
            "-O",
            "raw",
            "bs=1M",
            "count=4",
            &format!("if={name}"),
            "of=head.qemu",
        ],
    );
    let ours = layerscope(dir, &["read", "--length", "4M", name])
        .ok()
        .stdout;
    assert!(
        ours == std::fs::read(dir.join("head.qemu")).unwrap(),
        "{name}: first 4 MiB"
    );
}

/// A writer-made differencing disk: what layerscope reads equals the
/// parent (read by qemu) with the writes applied; the map puts exactly the
/// written sectors in the child.
fn check_differencing(dir: &Path, child: &str, parent_flat: &[u8], writes: &Writes) {
    let want = writer::apply(parent_flat, writes);
    let ours = layerscope(dir, &["read", child]).ok().stdout;
    assert_eq!(ours.len(), want.len(), "{child}: size");
    if let Some(at) = ours.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{child}: differs from the intended bytes at {at:#x}");
    }
    let map = layerscope(dir, &["map", "--json", child]).ok().json();
    let mut mine = 0u64;
    for e in map.as_array().unwrap() {
        if e["depth"] == 0 && e["present"] == true {
            mine += e["length"].as_u64().unwrap();
        }
    }
    let mut sectors = std::collections::BTreeSet::new();
    for (off, data) in writes {
        for k in 0..data.len() as u64 / 512 {
            sectors.insert(off / 512 + k);
        }
    }
    assert_eq!(
        mine,
        sectors.len() as u64 * 512,
        "{child}: bytes held by the child"
    );
}

fn flat_of(dir: &Path, image: &str, fmt: &str) -> Vec<u8> {
    let out = dir.join(format!("{image}.flat"));
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-f",
            fmt,
            "-O",
            "raw",
            image,
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

#[test]
fn differencing_disks_follow_their_locators() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vpc", "base.vhd", "20M"],
    );
    writes_for(dir, "base.vhd", "vpc");
    check(dir, "base.vhd", None);
    let base = std::fs::read(dir.join("base.vhd")).unwrap();
    let base_flat = flat_of(dir, "base.vhd", "vpc");
    let writes: Writes = vec![
        (0x20000, writer::pattern(0x1000, 1)),
        (0x3ff200, writer::pattern(0x400, 2)),
        (0x600000, writer::pattern(0x200, 3)),
    ];
    std::fs::create_dir(dir.join("snap")).unwrap();
    let child = writer::vhd_differencing(
        &base,
        "..\\base.vhd",
        "C:\\vms\\base.vhd",
        "base.vhd",
        [1; 16],
        &writes,
    );
    std::fs::write(dir.join("snap/child.vhd"), &child).unwrap();
    check_differencing(dir, "snap/child.vhd", &base_flat, &writes);
    let text = layerscope(dir, &["chain", "snap/child.vhd"]).ok().text();
    assert!(text.contains("VHD differencing"), "{text}");
    assert!(text.contains("resolved to:   snap/../base.vhd"), "{text}");
    // A grandchild, and a qcow2 overlay above it: one chain of three
    // formats' layers.
    let writes2: Writes = vec![
        (0x20000, writer::pattern(0x200, 4)),
        (0x800000, writer::pattern(0x200, 5)),
    ];
    let grand = writer::vhd_differencing(
        &child,
        ".\\child.vhd",
        "C:\\vms\\child.vhd",
        "child.vhd",
        [2; 16],
        &writes2,
    );
    std::fs::write(dir.join("snap/grand.vhd"), &grand).unwrap();
    let child_flat = writer::apply(&base_flat, &writes);
    check_differencing(dir, "snap/grand.vhd", &child_flat, &writes2);
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "grand.vhd",
            "-F",
            "vpc",
            "snap/top.qcow2",
        ],
    );
    let chain = layerscope(dir, &["chain", "--json", "snap/top.qcow2"])
        .ok()
        .json();
    let formats: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["qcow2", "vpc", "vpc", "vpc"]);
    let ours = layerscope(dir, &["read", "snap/top.qcow2"]).ok().stdout;
    assert!(
        ours == writer::apply(&child_flat, &writes2),
        "qcow2 over the VHD chain"
    );

    // The relative locator is stale: the parent's file name finds it.
    let moved = writer::vhd_differencing(
        &base,
        ".\\old\\base.vhd",
        "D:\\gone\\nothere.vhd",
        "base.vhd",
        [3; 16],
        &writes,
    );
    std::fs::write(dir.join("moved.vhd"), &moved).unwrap();
    check_differencing(dir, "moved.vhd", &base_flat, &writes);
    // A file with the right name but another unique ID is not the parent.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vpc",
            "snap/other.vhd",
            "20M",
        ],
    );
    let wrong = writer::vhd_differencing(
        &base,
        ".\\other.vhd",
        "C:\\x\\other.vhd",
        "other.vhd",
        [4; 16],
        &writes,
    );
    std::fs::write(dir.join("snap/wrong.vhd"), &wrong).unwrap();
    refused(
        dir,
        &["chain", "snap/wrong.vhd"],
        &["snap/wrong.vhd", "is not the parent's"],
    );
}

#[test]
fn hostile_images_are_refused_clearly() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vpc", "good.vhd", "20M"],
    );
    qemu_io_fmt(dir, "vpc", "good.vhd", &["write -P 9 0 0x1000"]);
    let good = std::fs::read(dir.join("good.vhd")).unwrap();
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let dyn_at = be64(&good, 16) as usize;
    let bat = be64(&good, dyn_at + 16);
    // A footer with a wrong checksum.
    patched(dir, "good.vhd", "sum.vhd", 64, &[0, 0, 0, 1]);
    refused(
        dir,
        &["chain", "sum.vhd"],
        &["sum.vhd", "VHD footer", "checksum"],
    );
    // BAT entry 0 past the end of the file, and one pointing at the BAT.
    let resum = |name: &str, at: u64, bytes: &[u8]| {
        patched(dir, "good.vhd", name, at, bytes);
        let mut b = std::fs::read(dir.join(name)).unwrap();
        let c = vhd_sum(&b[dyn_at..dyn_at + 1024], 36);
        b[dyn_at + 36..dyn_at + 40].copy_from_slice(&c.to_be_bytes());
        std::fs::write(dir.join(name), b).unwrap();
    };
    resum(
        "eof.vhd",
        bat,
        &(good.len() as u32 / 512 + 100).to_be_bytes(),
    );
    refused(
        dir,
        &["chain", "eof.vhd"],
        &[
            "eof.vhd",
            "VHD BAT entry",
            "truncated",
            &format!("{bat:#x}"),
        ],
    );
    resum("overlap.vhd", bat, &((bat / 512) as u32).to_be_bytes());
    refused(
        dir,
        &["read", "overlap.vhd"],
        &[
            "overlap.vhd",
            "VHD BAT entry",
            "overlaps the block allocation table",
        ],
    );
    // Block sizes 0 and 2^31.
    resum("bs0.vhd", dyn_at as u64 + 32, &0u32.to_be_bytes());
    refused(
        dir,
        &["chain", "bs0.vhd"],
        &["bs0.vhd", "VHD dynamic header", "block size 0"],
    );
    resum("bs2g.vhd", dyn_at as u64 + 32, &(1u32 << 31).to_be_bytes());
    refused(
        dir,
        &["chain", "bs2g.vhd"],
        &["bs2g.vhd", "VHD BAT entry", "truncated"],
    );
    let _ = be32;
    // A differencing disk naming itself as its parent.
    let id: [u8; 16] = [7; 16];
    let mut looped = writer::vhd_differencing(
        &good,
        ".\\self.vhd",
        "C:\\self.vhd",
        "self.vhd",
        id,
        &vec![],
    );
    let n = looped.len();
    for at in [0, n - 512] {
        looped[at + 68..at + 84].copy_from_slice(&id);
        let c = vhd_sum(&looped[at..at + 512], 64);
        looped[at + 64..at + 68].copy_from_slice(&c.to_be_bytes());
    }
    looped[512 + 40..512 + 56].copy_from_slice(&id);
    std::fs::write(dir.join("self.vhd"), looped).unwrap();
    refused(
        dir,
        &["chain", "self.vhd"],
        &["backing chain loop", "self.vhd"],
    );
}

fn vhd_sum(b: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if !(field..field + 4).contains(&i) {
            sum = sum.wrapping_add(x as u32);
        }
    }
    !sum
}
