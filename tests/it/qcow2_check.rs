//! `check --image-only` of qcow2 images with internal snapshots and
//! persistent bitmaps counts what `qemu-img check` counts: the clusters
//! of the snapshot table, each snapshot's L1/L2 tables, the bitmap
//! directory, tables and data; and the same after each is damaged.
use std::path::Path;

use serde_json::Value;

use crate::util::*;

const CLUSTER: usize = 65536;

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Two snapshots, data written before, between and after them, and two
/// persistent bitmaps that recorded some of it.
fn build(d: &Path) {
    sh(
        d,
        &["qemu-img", "create", "-q", "-f", "qcow2", "a.qcow2", "32M"],
    );
    qemu_io(d, "a.qcow2", &["write -P 1 0 3M", "write -P 2 8M 1M"]);
    sh(d, &["qemu-img", "snapshot", "-c", "first", "a.qcow2"]);
    sh(d, &["qemu-img", "bitmap", "--add", "a.qcow2", "b0"]);
    sh(
        d,
        &[
            "qemu-img", "bitmap", "--add", "-g", "128K", "a.qcow2", "fine",
        ],
    );
    qemu_io(d, "a.qcow2", &["write -P 3 1M 2M", "write -P 4 20M 64k"]);
    sh(d, &["qemu-img", "snapshot", "-c", "second", "a.qcow2"]);
    qemu_io(d, "a.qcow2", &["write -P 5 0 512k", "write -P 6 30M 1M"]);
}

/// qemu-img check's counts and ours, key by key (qemu leaves out counts
/// that are 0).
fn same_counts(d: &Path, what: &str) -> Value {
    let qemu = std::process::Command::new("qemu-img")
        .args(["check", "--output=json", "a.qcow2"])
        .current_dir(d)
        .output()
        .unwrap();
    let theirs: Value = serde_json::from_slice(&qemu.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: qemu-img check said no JSON ({e}): {}",
            String::from_utf8_lossy(&qemu.stderr)
        )
    });
    let run = layerscope(d, &["check", "--image-only", "--json", "a.qcow2"]);
    let json = run.json();
    let ours = &json["layers"][0];
    for key in [
        "leaks",
        "corruptions",
        "check-errors",
        "image-end-offset",
        "allocated-clusters",
        "total-clusters",
    ] {
        let n = |v: &Value| v[key].as_u64().unwrap_or(0);
        assert_eq!(
            n(ours),
            n(&theirs),
            "{what}: {key}: ours {ours}, qemu's {theirs}"
        );
    }
    let clean = theirs["leaks"].as_u64().unwrap_or(0) == 0
        && theirs["corruptions"].as_u64().unwrap_or(0) == 0
        && theirs["check-errors"].as_u64().unwrap_or(0) == 0;
    assert_eq!(run.code == 0, clean, "{what}: exit {}: {ours}", run.code);
    ours.clone()
}

#[test]
fn snapshots_and_bitmaps_are_counted_as_qemu_img_check_counts() {
    if !(need("qemu-img") && need("qemu-io")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build(d);
    let ours = same_counts(d, "intact");
    assert_eq!(ours["corruptions"].as_u64().unwrap_or(0), 0, "{ours}");
    let intact = std::fs::read(d.join("a.qcow2")).unwrap();

    // The first snapshot's L1 table moved off its cluster boundary.
    let table = be64(&intact, 64) as usize;
    let mut bytes = intact.clone();
    let l1 = be64(&bytes, table);
    bytes[table..table + 8].copy_from_slice(&(l1 + 512).to_be_bytes());
    std::fs::write(d.join("a.qcow2"), &bytes).unwrap();
    let ours = same_counts(d, "an unaligned snapshot L1 table");
    assert!(ours["corruptions"].as_u64().unwrap_or(0) > 0, "{ours}");

    // The first snapshot's L1 table points at the active one: that table
    // and its L2 tables gain references their refcounts do not hold, and
    // the snapshot's own tables lose theirs (leaks).
    let mut bytes = intact.clone();
    let active_l1 = be64(&bytes, 40);
    bytes[table..table + 8].copy_from_slice(&active_l1.to_be_bytes());
    std::fs::write(d.join("a.qcow2"), &bytes).unwrap();
    same_counts(d, "a snapshot sharing the active L1 table");

    // The bitmaps: find the directory through the header extension.
    let header_len = be32(&intact, 100) as usize;
    let mut at = header_len;
    let mut dir_offset = None;
    while at + 8 <= CLUSTER {
        let (kind, len) = (be32(&intact, at), be32(&intact, at + 4) as usize);
        if kind == 0 {
            break;
        }
        if kind == 0x2385_2875 {
            assert_eq!(be32(&intact, at + 8), 2, "two bitmaps");
            dir_offset = Some(be64(&intact, at + 24) as usize);
        }
        at += 8 + len.next_multiple_of(8);
    }
    let dir_offset = dir_offset.expect("the bitmaps extension");
    let bitmap_table = be64(&intact, dir_offset) as usize;
    let entries = be32(&intact, dir_offset + 8) as usize;
    let used = (0..entries)
        .find(|i| be64(&intact, bitmap_table + 8 * i) > 1)
        .expect("a bitmap table entry with data");
    // A reserved bit set in a table entry that has data.
    let mut bytes = intact.clone();
    let e = bitmap_table + 8 * used;
    let v = be64(&bytes, e) | 2;
    bytes[e..e + 8].copy_from_slice(&v.to_be_bytes());
    std::fs::write(d.join("a.qcow2"), &bytes).unwrap();
    // qemu will not open the image (it loads the bitmaps' tables when it
    // opens one); the check names the entry and goes on with the rest.
    let qemu = std::process::Command::new("qemu-img")
        .args(["check", "a.qcow2"])
        .current_dir(d)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&qemu.stderr);
    assert!(
        !qemu.status.success() && said.contains("bitmap_table") && said.contains("'b"),
        "{said}"
    );
    let run = layerscope(d, &["check", "--image-only", "--json", "a.qcow2"]);
    assert_eq!(run.code, 1, "{}{}", run.text(), run.stderr);
    let json = run.json();
    let problems = json["layers"][0]["problems"]["list"].as_array().unwrap();
    let entry = format!("table entry {used}");
    assert!(
        problems.iter().any(|p| p["kind"] == "bitmap-table-entry"
            && p["offset"].as_u64() == Some(e as u64)
            && p["structure"].as_str().is_some_and(|w| w.ends_with(&entry))),
        "{json}"
    );
    // Reading that bitmap stops at the entry, as qemu refuses it.
    let (name_len, extra) = (
        u16::from_be_bytes(intact[dir_offset + 18..dir_offset + 20].try_into().unwrap()) as usize,
        be32(&intact, dir_offset + 20) as usize,
    );
    let at = dir_offset + 24 + extra;
    let first = std::str::from_utf8(&intact[at..at + name_len]).unwrap();
    let map = layerscope(d, &["map", "--bitmap", first, "a.qcow2"]);
    assert_ne!(map.code, 0, "{}", map.text());
    assert!(
        map.stderr.contains(&format!("{e:#x}")) && map.stderr.contains(&entry),
        "{}",
        map.stderr
    );
}

/// [`share_first_l2`] of `a.qcow2`: the L1 table's size and the shared
/// table's offset.
fn share_a_first_l2(d: &Path) -> (usize, usize) {
    let (_, l1_size, first) = share_first_l2(&d.join("a.qcow2"));
    (l1_size, (first & 0x00ff_ffff_ffff_fe00) as usize)
}

fn create(d: &Path, opts: &str, size: &str) {
    let _ = std::fs::remove_file(d.join("a.qcow2"));
    sh(
        d,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "a.qcow2", size,
        ],
    );
}

/// Tables named many times (every L1 entry naming one L2 table, two
/// snapshots copying that L1, two snapshots sharing one L1 table) are
/// walked once each and their references counted by multiplicity; the
/// counts equal `qemu-img check`'s, which walks them per reference:
/// refcounts too low, 4-bit and 16-bit refcount overflows (one error per
/// reference over the limit), 32-bit counts past 65,535, and a reserved
/// bit in the shared L2 table counted once per reference.
#[test]
fn tables_named_many_times_are_counted_as_qemu_img_check_counts() {
    if !(need("qemu-img") && need("qemu-io")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // 2,048 L1 entries naming one L2 table, then two snapshots of it.
    create(d, "cluster_size=64k", "1T");
    qemu_io(d, "a.qcow2", &["write -P 1 0 192k", "write -P 2 1G 64k"]);
    let (l1_size, l2) = share_a_first_l2(d);
    assert_eq!(l1_size, 2048);
    let ours = same_counts(d, "one L2 table named by 2,048 L1 entries");
    // The shared table and its three data clusters, each referenced 2,048
    // times with a refcount of 1.
    assert_eq!(ours["corruptions"], 4, "{ours}");
    sh(d, &["qemu-img", "snapshot", "-c", "s1", "a.qcow2"]);
    sh(d, &["qemu-img", "snapshot", "-c", "s2", "a.qcow2"]);
    let ours = same_counts(d, "and two snapshots of that L1 table");
    assert_eq!(ours["allocated-clusters"], 3 * 2048, "{ours}");
    let snapped = std::fs::read(d.join("a.qcow2")).unwrap();

    // A reserved bit in the shared table: one error per reference.
    let mut img = snapped.clone();
    let e = be64(&img, l2 + 8) | 2;
    img[l2 + 8..l2 + 16].copy_from_slice(&e.to_be_bytes());
    std::fs::write(d.join("a.qcow2"), &img).unwrap();
    let ours = same_counts(d, "a reserved bit in the shared L2 table");
    let listed = ours["problems"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "l2-reserved-bits")
        .count();
    assert_eq!(listed, 1, "listed once: {ours}");

    // The second snapshot's L1 table replaced by the first's.
    let mut img = snapped;
    let table = be64(&img, 64) as usize;
    let first_l1 = be64(&img, table);
    let id_len = u16::from_be_bytes(img[table + 12..table + 14].try_into().unwrap()) as usize;
    let name_len = u16::from_be_bytes(img[table + 14..table + 16].try_into().unwrap()) as usize;
    let extra = be32(&img, table + 36) as usize;
    let second = (table + 40 + extra + id_len + name_len).next_multiple_of(8);
    img[second..second + 8].copy_from_slice(&first_l1.to_be_bytes());
    std::fs::write(d.join("a.qcow2"), &img).unwrap();
    same_counts(d, "two snapshots sharing one L1 table");

    // 4-bit refcounts: every reference past 15 is an overflow.
    create(d, "cluster_size=64k,refcount_bits=4", "1T");
    qemu_io(d, "a.qcow2", &["write -P 1 0 192k"]);
    share_a_first_l2(d);
    let ours = same_counts(d, "4-bit refcounts, 2,048 references");
    assert!(ours["corruptions"].as_u64().unwrap() > 8000, "{ours}");

    // 70,000 references: past 16-bit refcounts, and counted exactly
    // with 32-bit ones (512-byte clusters keep qemu's walk short).
    for (bits, what) in [("16", "16-bit overflow"), ("32", "32-bit refcounts")] {
        create(
            d,
            &format!("cluster_size=512,refcount_bits={bits}"),
            &format!("{}", 70_000u64 * 32 * 1024),
        );
        qemu_io(d, "a.qcow2", &["write -P 1 0 1k"]);
        let (l1_size, _) = share_a_first_l2(d);
        assert_eq!(l1_size, 70_000);
        let ours = same_counts(d, what);
        let detail = ours["problems"]["list"][0]["detail"].as_str().unwrap_or("");
        if bits == "32" {
            assert!(detail.contains("referenced 70000 times"), "{ours}");
        }
    }
}
