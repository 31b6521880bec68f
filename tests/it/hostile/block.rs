//! The block layer on hostile images: a read error in a hex dump, a
//! compressed cluster that inflates past its size, special files as
//! images or backing files, a small qcow2 claiming 16 TiB, and VMDK
//! grain directories far larger than what they hold.
use std::path::Path;

use super::{be64, bounded, fails_with, put_be64, run};
use crate::formats::{check_map, qemu_io_fmt};
use crate::util::{need, qemu_io, sh, share_first_l2};

/// The L2 table of the image's first L1 entry.
fn first_l2(img: &[u8]) -> usize {
    let l1 = be64(img, 40) as usize;
    (be64(img, l1) & 0x00ff_ffff_ffff_fe00) as usize
}

/// A qcow2 whose second cluster maps to 1 TiB into a 448 KiB file: reading
/// it fails with "past the end of the file".
fn broken_read(dir: &Path) -> String {
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "bad.qcow2", "1M"],
    );
    qemu_io(dir, "bad.qcow2", &["write -P 0x41 0 128k"]);
    let path = dir.join("bad.qcow2");
    let mut img = std::fs::read(&path).unwrap();
    let l2 = first_l2(&img);
    put_be64(&mut img, l2 + 8, (1 << 63) | (1 << 40));
    std::fs::write(&path, img).unwrap();
    "bad.qcow2".into()
}

/// `read --hex` stops at the first read error, with the error, instead of
/// spinning on it (hexyl's printer asks again forever).
#[test]
fn hex_dump_ends_at_a_read_error() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let img = broken_read(dir);
    let r = run(
        dir,
        &[
            "read", "--hex", "--color", "never", "--length", "256K", &img,
        ],
        b"\n",
    );
    fails_with(&r, "read --hex", &["bad.qcow2", "past the end of the file"]);
    // The readable first cluster is dumped before the error, once.
    let text = r.text();
    assert!(text.contains("41 41 41 41"), "{text}");
    assert!(r.count < 64, "{} lines: the dump repeats", r.count);
}

/// The same against an NBD server whose reads all fail: one error, not a
/// loop of requests.
#[test]
fn hex_dump_over_a_failing_server_ends() {
    if !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let sock = dir.join("err.sock");
    let mut server = std::process::Command::new("nbdkit")
        .args([
            "-f",
            "-U",
            sock.to_str().unwrap(),
            "--filter=error",
            "pattern",
            "1M",
        ])
        .args(["error-rate=100%", "error-pread=EIO"])
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let r = run(dir, &["read", "--hex", "--length", "64K", &uri], b"");
    let _ = server.kill();
    let _ = server.wait();
    fails_with(&r, "read --hex over NBD", &["EIO"]);
}

/// Replaces the compressed stream of the cluster at guest offset 0 by
/// `stream` (which must not be longer than the old one's sectors).
fn replace_compressed(path: &Path, stream: &[u8]) {
    let mut img = std::fs::read(path).unwrap();
    let cluster_bits = u32::from_be_bytes(img[20..24].try_into().unwrap());
    let l2 = first_l2(&img);
    let entry = be64(&img, l2);
    assert!(entry & (1 << 62) != 0, "cluster 0 is not compressed");
    let shift = 62 - (cluster_bits - 8);
    let offset = (entry & ((1 << shift) - 1)) as usize;
    let sectors = ((entry >> shift) & ((1 << (cluster_bits - 8)) - 1)) as usize + 1;
    let room = (sectors * 512 - (offset & 511)).min(img.len() - offset);
    assert!(stream.len() <= room, "{} > {room}", stream.len());
    img[offset..offset + room].fill(0);
    img[offset..offset + stream.len()].copy_from_slice(stream);
    std::fs::write(path, img).unwrap();
}

/// Data that compresses to about half: the cluster is stored compressed
/// and its stream has room for a tiny one.
fn half_compressible(dir: &Path) -> std::path::PathBuf {
    let data: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 28) as u8)
        .collect();
    let p = dir.join("data.bin");
    std::fs::write(&p, data).unwrap();
    p
}

/// A zstd cluster whose frame inflates to two clusters is EIO for qemu
/// and an error naming the cluster for layerscope, never a silent cut.
#[test]
fn compressed_cluster_inflating_past_its_size() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let data = half_compressible(dir);
    let write = format!("write -c -s {} 0 64k", data.display());
    for (name, opts) in [
        ("zstd.qcow2", "compression_type=zstd"),
        ("zlib.qcow2", "compression_type=zlib"),
    ] {
        sh(
            dir,
            &[
                "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, name, "1M",
            ],
        );
        qemu_io(dir, name, &[&write]);
        let big = vec![0x5au8; 128 << 10];
        let stream = if name.starts_with("zstd") {
            ruzstd::encoding::compress_to_vec(&big[..], ruzstd::encoding::CompressionLevel::Fastest)
        } else {
            use std::io::Write;
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&big).unwrap();
            e.finish().unwrap()
        };
        replace_compressed(&dir.join(name), &stream);
        let q = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-r", "-c", "read 0 64k", name])
            .current_dir(dir)
            .output()
            .unwrap();
        let said =
            String::from_utf8_lossy(&q.stdout).into_owned() + &String::from_utf8_lossy(&q.stderr);
        if name.starts_with("zstd") {
            // The oracle: qemu refuses the cluster.
            assert!(said.contains("Input/output error"), "qemu-io: {said}");
        }
        // (qemu's zlib path keeps the first cluster's worth and drops the
        // rest; layerscope refuses both alike, see qcow2/compressed.rs.)
        let r = run(dir, &["read", "--length", "64K", name], b"");
        fails_with(
            &r,
            name,
            &[name, "compressed cluster", "inflates past the cluster size"],
        );
    }
}

/// FIFOs, sockets and character devices are refused before anything can
/// block, as the image or as a backing file; the message says what they
/// are.
#[test]
fn special_files_are_refused_before_open() {
    if !need("qemu-img") || !need("mkfifo") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(dir, &["mkfifo", "fifo.img"]);
    let r = run(dir, &["chain", "fifo.img"], b"");
    fails_with(&r, "chain fifo", &["fifo.img", "FIFO"]);
    // As a backing file (written without opening it: -u).
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "fifo.img",
            "-F",
            "raw",
            "top.qcow2",
            "1M",
        ],
    );
    for cmd in ["chain", "map", "read"] {
        let r = run(dir, &[cmd, "top.qcow2"], b"");
        fails_with(&r, cmd, &["fifo.img", "FIFO"]);
    }
    let _sock = std::os::unix::net::UnixListener::bind(dir.join("sock.img")).unwrap();
    let r = run(dir, &["map", "sock.img"], b"");
    fails_with(&r, "map socket", &["sock.img", "socket"]);
    let r = run(dir, &["map", "/dev/zero"], b"");
    fails_with(&r, "map /dev/zero", &["/dev/zero", "character device"]);
}

/// A 4.6 MiB qcow2 claiming 256 TiB whose 2^19 L1 entries all share one
/// L2 table (with two data clusters and a zero cluster): `chain` says
/// how much it holds from the one table, at once (walking the claimed
/// disk took 81 s for 16 TiB). The oracle is the sum of qemu-img map's
/// present ranges over the first 16 TiB, times 16.
#[test]
fn chain_cost_follows_the_real_l2_tables() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "huge.qcow2",
            "256T",
        ],
    );
    qemu_io(
        dir,
        "huge.qcow2",
        &["write -P 7 0 64k", "write -z 128k 64k", "write -P 9 1M 64k"],
    );
    let path = dir.join("huge.qcow2");
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len <= 5 << 20, "{len} bytes");
    let (_, l1_size, _) = share_first_l2(&path);
    assert_eq!(l1_size, 1 << 19);
    let out = sh(
        dir,
        &[
            "qemu-img",
            "map",
            "--output=json",
            "--max-length",
            "16T",
            "huge.qcow2",
        ],
    );
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let held_16t: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["present"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    let held = held_16t * 16;
    assert_eq!(held, (1 << 19) * 3 * 65536);
    let r = run(dir, &["chain", "--json", "huge.qcow2"], b"");
    bounded(&r, "chain");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j[0]["allocated-bytes"].as_u64(), Some(held));
    let r = run(dir, &["chain", "huge.qcow2"], b"");
    bounded(&r, "chain");
    assert!(
        r.text()
            .contains(&format!("holds:         96 GiB of the disk ({held} bytes)")),
        "{}",
        r.text()
    );
}

/// A VMDK (qemu-img's monolithicSparse) claiming 1 TiB, its grain
/// directory edited two ways: every entry pointing at the first grain
/// table (with two data grains and a zeroed one), and every entry but the
/// first empty. `chain` counts what it holds from the tables in the file
/// (the walk of every grain the header claims took 15-19 s on a fuzzer's
/// 256 KiB input claiming 1.1 TiB). The oracle is qemu-img map's present
/// ranges.
#[test]
fn vmdk_held_bytes_follow_the_real_grain_tables() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "1T"],
    );
    let io = |args: &[&str]| {
        let mut cmd = vec!["qemu-io", "-f", "vmdk"];
        for a in args {
            cmd.extend(["-c", a]);
        }
        cmd.push("base.vmdk");
        sh(dir, &cmd);
    };
    io(&["write -P 7 0 64k", "write -P 9 1M 64k"]);
    let img = std::fs::read(dir.join("base.vmdk")).unwrap();
    let le = |at: usize, n: usize| {
        let mut v = 0u64;
        for i in (0..n).rev() {
            v = (v << 8) | u64::from(img[at + i]);
        }
        v
    };
    assert_eq!(&img[..4], b"KDMV");
    let (grain, gtes) = (le(20, 8) * 512, le(44, 4));
    let entries = (1u64 << 40).div_ceil(grain * gtes) as usize;
    let held_map = |name: &str| -> u64 {
        let out = sh(
            dir,
            &["qemu-img", "map", "--output=json", "-f", "vmdk", name],
        );
        let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        map.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["present"] == true)
            .map(|e| e["length"].as_u64().unwrap())
            .sum()
    };
    for (name, shared) in [("shared.vmdk", true), ("empty.vmdk", false)] {
        let mut v = img.clone();
        for gd in [le(48, 8), le(56, 8)] {
            let gd = gd as usize * 512;
            let first: [u8; 4] = v[gd..gd + 4].try_into().unwrap();
            for i in 1..entries {
                let e = if shared { first } else { [0; 4] };
                v[gd + i * 4..gd + i * 4 + 4].copy_from_slice(&e);
            }
        }
        std::fs::write(dir.join(name), v).unwrap();
        let held = held_map(name);
        let expect = if shared { entries as u64 } else { 1 } * 2 * grain;
        assert_eq!(held, expect, "{name}: qemu-img map");
        let r = run(dir, &["chain", "--json", name], b"");
        bounded(&r, "chain");
        assert_eq!(r.code, 0, "{}", r.stderr);
        let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(j[0]["allocated-bytes"].as_u64(), Some(held), "{name}");
    }
}

/// A VMDK of 64 GiB whose grain tables hold one entry each: its grain
/// directory has 2 Mi entries (a fuzzer's 109-byte input claimed 22 Mi
/// over a file of holes, and `chain` looked each one up: 3 s of CPU in
/// the fuzzer, beyond its 10 s timeout under load). Runs of empty entries
/// are now stepped over a page of the directory at a time. qemu-img map is
/// the oracle for `map` and for what `chain` says the layer holds,
/// including data past the last of 2 million entries' runs of zeros.
#[test]
fn vmdk_runs_of_empty_directory_entries_are_stepped_over_whole() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "64G"],
    );
    qemu_io_fmt(
        dir,
        "vmdk",
        "base.vmdk",
        &[
            "write -P 7 0 64k",
            "write -P 9 1M 64k",
            "write -P 5 50G 128k",
        ],
    );
    let img = std::fs::read(dir.join("base.vmdk")).unwrap();
    let le = |at: usize, n: usize| {
        let mut v = 0u64;
        for i in (0..n).rev() {
            v = (v << 8) | u64::from(img[at + i]);
        }
        v
    };
    assert_eq!(&img[..4], b"KDMV");
    let (capacity, grain, gtes, gd) = (le(12, 8), le(20, 8), le(44, 4), le(56, 8));
    // The grains qemu-io wrote: (grain index, sector of its data).
    let mut grains = Vec::new();
    for k in 0..capacity.div_ceil(grain * gtes) {
        let gt = le(gd as usize * 512 + k as usize * 4, 4);
        for j in 0..gtes {
            let sector = if gt == 0 {
                0
            } else {
                le(gt as usize * 512 + j as usize * 4, 4)
            };
            if sector != 0 {
                grains.push((k * gtes + j, sector));
            }
        }
    }
    assert_eq!(grains.len(), 4, "{grains:?}");
    // The same grains through a new directory of one-entry tables, after
    // the file's end: one entry per grain, a table sector per grain held.
    let mut v = img.clone();
    let entries = capacity.div_ceil(grain) as usize;
    let new_gd = v.len() / 512;
    let tables = new_gd + (entries * 4).div_ceil(512);
    v.resize((tables + grains.len()) * 512, 0);
    for (i, (index, sector)) in grains.iter().enumerate() {
        let table = tables + i;
        let at = new_gd * 512 + *index as usize * 4;
        v[at..at + 4].copy_from_slice(&(table as u32).to_le_bytes());
        v[table * 512..table * 512 + 4].copy_from_slice(&(*sector as u32).to_le_bytes());
    }
    v[44..48].copy_from_slice(&1u32.to_le_bytes());
    for field in [48, 56] {
        v[field..field + 8].copy_from_slice(&(new_gd as u64).to_le_bytes());
    }
    std::fs::write(dir.join("tiny.vmdk"), v).unwrap();
    check_map(dir, "tiny.vmdk", Some("vmdk"));
    let out = sh(
        dir,
        &[
            "qemu-img",
            "map",
            "--output=json",
            "-f",
            "vmdk",
            "tiny.vmdk",
        ],
    );
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let held: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["present"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(held, 4 * grain * 512, "qemu-img map");
    let r = run(dir, &["chain", "--json", "tiny.vmdk"], b"");
    bounded(&r, "chain");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j[0]["allocated-bytes"].as_u64(), Some(held));
}

/// A VMDK whose grain directory mixes entries whose tables lie in holes
/// of the file (qemu-img leaves its preallocated tables unwritten) with
/// long runs of empty entries, edited in place so the holes stay holes.
/// The unallocated stretch after a table in a hole used to be walked a
/// directory lookup per entry (a fuzzer's 139-byte VMDK claiming 2^35
/// sectors over a directory of zeros: 8 s in `map`); runs of empty entries
/// are now stepped over a page at a time. The oracle is qemu-img map, on
/// the whole disk and across each kind of entry.
#[test]
fn vmdk_empty_entries_after_a_table_in_a_hole_are_stepped_over_whole() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "64G"],
    );
    qemu_io_fmt(
        dir,
        "vmdk",
        "base.vmdk",
        &["write -P 7 0 64k", "write -P 5 50G 128k"],
    );
    sh(dir, &["cp", "--sparse=always", "base.vmdk", "mixed.vmdk"]);
    let img = std::fs::read(dir.join("base.vmdk")).unwrap();
    let le = |at: usize, n: usize| {
        let mut v = 0u64;
        for i in (0..n).rev() {
            v = (v << 8) | u64::from(img[at + i]);
        }
        v
    };
    assert_eq!(&img[..4], b"KDMV");
    let (capacity, grain, gtes) = (le(12, 8), le(20, 8), le(44, 4));
    let entries = capacity.div_ceil(grain * gtes);
    let last = (50u64 << 30) / (grain * 512 * gtes);
    assert!(entries > last + 2 && last > 1_002, "{entries} {last}");
    let meta = std::fs::metadata(dir.join("mixed.vmdk")).unwrap();
    assert!(
        meta.blocks() * 512 < meta.len() / 4,
        "qemu-img's preallocated tables are holes: {} of {} bytes allocated",
        meta.blocks() * 512,
        meta.len()
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("mixed.vmdk"))
        .unwrap();
    for gd in [le(48, 8), le(56, 8)] {
        for i in (2..last).filter(|&i| i != 1_000) {
            f.seek(SeekFrom::Start(gd * 512 + i * 4)).unwrap();
            f.write_all(&[0; 4]).unwrap();
        }
    }
    drop(f);
    check_map(dir, "mixed.vmdk", Some("vmdk"));
    check_map(dir, "base.vmdk", Some("vmdk"));
    let r = run(dir, &["map", "--json", "mixed.vmdk"], b"");
    bounded(&r, "map");
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// Entries of qemu's largest L1 table (32 MiB).
const MAX_L1_ENTRIES: u64 = 1 << 22;

/// A 42 MiB qcow2 with 2 MiB clusters whose 4M L1 entries (qemu's
/// largest L1 table) all name one L2 table of 262,144 entries, with one
/// data cluster. Returns the path and the L1 table's offset.
fn l1_all_naming_one_l2(dir: &Path) -> (std::path::PathBuf, u64) {
    // Each L1 entry maps 2^18 clusters of 2 MiB: 512 GiB.
    let size = format!("{}G", MAX_L1_ENTRIES * 512);
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=2M",
            "huge.qcow2",
            &size,
        ],
    );
    qemu_io(dir, "huge.qcow2", &["write -P 7 0 4k"]);
    let path = dir.join("huge.qcow2");
    let (l1, l1_size, _) = share_first_l2(&path);
    assert_eq!(l1_size as u64, MAX_L1_ENTRIES);
    (path, l1 as u64)
}

/// [`l1_all_naming_one_l2`]: `check` walks the shared table once and
/// counts its references by multiplicity (walking it per reference, as
/// qemu-img check does, is 2^40 entries: hours). The counts follow
/// qemu's rules, which
/// `qcow2_check::tables_named_many_times_are_counted_as_qemu_img_check_counts`
/// compares with qemu-img check at 70,000 references: one corruption per
/// reference past 16-bit refcounts, one per cluster whose refcount is too
/// low.
#[test]
fn check_walks_a_table_named_millions_of_times_once() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    l1_all_naming_one_l2(dir);
    let r = run(dir, &["check", "--image-only", "--json", "huge.qcow2"], b"");
    bounded(&r, "check");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let layer = &j["layers"][0];
    // The L2 table and its one data cluster.
    let over = MAX_L1_ENTRIES - 65_535;
    assert_eq!(layer["corruptions"].as_u64(), Some(2 * over + 2), "{layer}");
    assert_eq!(layer["allocated-clusters"].as_u64(), Some(MAX_L1_ENTRIES));
    assert_eq!(layer["leaks"].as_u64(), Some(0), "{layer}");
    let list = layer["problems"]["list"].as_array().unwrap();
    assert_eq!(
        list.len(),
        4,
        "one overflow and one too-low per cluster: {layer}"
    );
}

/// [`l1_all_naming_one_l2`] with 1,024 snapshots whose L1 tables are
/// distinct but overlap the active one (the same offset, each a different
/// size): distinct tables beyond what the file can hold apart (its size
/// in entries, plus one largest table) are not walked, and the check
/// says so; walking each would be 4G entries.
#[test]
fn check_stops_at_overlapping_snapshot_tables() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (path, l1) = l1_all_naming_one_l2(dir);
    let mut img = std::fs::read(&path).unwrap();
    let cluster = 2usize << 20;
    let table_at = img.len().next_multiple_of(cluster);
    let mut table = Vec::new();
    let count = 1024u32;
    for i in 0..count {
        let id = i.to_string();
        let name = format!("s{i}");
        table.extend_from_slice(&l1.to_be_bytes());
        table.extend_from_slice(&(MAX_L1_ENTRIES as u32 - i).to_be_bytes());
        table.extend_from_slice(&(id.len() as u16).to_be_bytes());
        table.extend_from_slice(&(name.len() as u16).to_be_bytes());
        table.extend_from_slice(&[0u8; 16]); // dates, vm clock
        table.extend_from_slice(&0u32.to_be_bytes()); // vm state
        table.extend_from_slice(&16u32.to_be_bytes()); // extra data
        table.extend_from_slice(&0u64.to_be_bytes()); // large vm state
        table.extend_from_slice(&(MAX_L1_ENTRIES * (512 << 30)).to_be_bytes());
        table.extend_from_slice(id.as_bytes());
        table.extend_from_slice(name.as_bytes());
        table.resize(table.len().next_multiple_of(8), 0);
    }
    img.resize(table_at, 0);
    img.extend_from_slice(&table);
    // The budget: the file's size in entries and one largest table; the
    // first snapshot past it is named.
    let mut budget = img.len() as u64 / 8 + MAX_L1_ENTRIES;
    let mut stop = 0u64;
    while let Some(left) = budget.checked_sub(MAX_L1_ENTRIES - stop) {
        budget = left;
        stop += 1;
    }
    assert!((1..4).contains(&stop), "{stop}");
    img[60..64].copy_from_slice(&count.to_be_bytes());
    put_be64(&mut img, 64, table_at as u64);
    std::fs::write(&path, img).unwrap();
    let r = run(dir, &["check", "--image-only", "--json", "huge.qcow2"], b"");
    bounded(&r, "check");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let errors = j["layers"][0]["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with("snapshot L1 tables:")
                && e.contains(&format!(
                    "from snapshot {stop} (s{stop}) on were not walked"
                )))),
        "{}",
        j["layers"][0]
    );
}

/// A 64 KiB-cluster qcow2 whose header claims a refcount table of 15M
/// clusters (960 GiB; qemu's limit is 8 MiB), in a sparse file of 1 TiB:
/// qemu refuses to open it; the check says why and counts nothing of the
/// refused table. Counting its claimed clusters one by one took 36 MB
/// here (a fuzzer's input: 0.27 s and 71 MB, 3 s in the fuzzer's build).
#[test]
fn check_does_not_count_a_refused_refcount_table() {
    if !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "big.qcow2",
            "64M",
        ],
    );
    let path = dir.join("big.qcow2");
    let mut img = std::fs::read(&path).unwrap();
    img[56..60].copy_from_slice(&(15u32 << 20).to_be_bytes());
    std::fs::write(&path, img).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let qemu = std::process::Command::new("qemu-img")
        .args(["check", "big.qcow2"])
        .current_dir(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&qemu.stderr);
    assert!(said.contains("Reference count table too large"), "{said}");
    let r = run(dir, &["check", "--image-only", "--json", "big.qcow2"], b"");
    bounded(&r, "check");
    assert!(r.peak_kib < 24 << 10, "peak {} KiB", r.peak_kib);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let errors = j["layers"][0]["errors"].to_string();
    assert!(errors.contains("larger than qemu's limit"), "{errors}");
}
