//! The bulk read path (several reader threads, zero runs skipped, a raw
//! layer's holes found with SEEK_DATA/SEEK_HOLE) returns the same bytes as
//! qemu-img convert, for the whole disk and for ranges that start and end
//! inside holes, zero clusters, compressed clusters and layer boundaries,
//! and its hit-map totals add up to what was read.
use std::fs;
use std::path::Path;

use layerscope::block::cache::BlockCache;
use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::block::stream::{stream_with, Piece};
use layerscope::block::BlockSource;

use crate::util::{layerscope, need, qemu_io, sh, Rng};

/// The chain of these tests in `d`: a sparse raw base (data, holes, a
/// partial last sector), a middle qcow2 overlay with compressed, zero
/// and data clusters, a top overlay with data and zero clusters; and
/// `flat.raw`, qemu-img convert's copy of the top. Returns the base's
/// bytes.
fn build_chain(d: &Path) -> Vec<u8> {
    // A sparse raw base: data, holes, data past 8 MiB; 24 MiB long, its
    // last sector partial (qemu rounds the disk up).
    let mut base = vec![0u8; (24 << 20) - 300];
    for (i, b) in base.iter_mut().enumerate() {
        let mib = i >> 20;
        if mib % 3 != 1 && !(10..14).contains(&mib) {
            *b = (i % 251) as u8 + 1;
        }
    }
    fs::write(d.join("base.raw"), &base).unwrap();
    sh(d, &["fallocate", "--dig-holes", "base.raw"]);
    sh(
        d,
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
    // Compressed and zero clusters, and plain data, in the middle layer.
    qemu_io(
        d,
        "mid.qcow2",
        &[
            "write -c -P 0x41 0 64k",
            "write -c -P 0x42 1m 128k",
            "write -z 2m 192k",
            "write -P 0x43 3100k 40k",
            "write -c -P 0x44 12m 64k",
        ],
    );
    sh(
        d,
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
        d,
        "top.qcow2",
        &[
            "write -P 0x51 64k 64k",
            "write -z 6m 1m",
            "write -P 0x52 20m 3m",
            "write -z 23m 64k",
        ],
    );
    sh(
        d,
        &["qemu-img", "convert", "-O", "raw", "top.qcow2", "flat.raw"],
    );
    base
}

#[test]
fn bulk_reads_equal_qemu_img_convert_across_every_kind_of_range() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = build_chain(d);
    let flat = fs::read(d.join("flat.raw")).unwrap();

    // The whole disk, to a pipe (zeros written) and as the raw base alone.
    let all = layerscope(d, &["read", "top.qcow2"]).ok();
    assert_eq!(all.stdout.len(), flat.len());
    assert!(
        all.stdout == flat,
        "read of the chain differs from qemu-img convert"
    );
    let raw = layerscope(d, &["read", "base.raw"]).ok();
    let mut padded = base.clone();
    padded.resize(base.len().div_ceil(512) * 512, 0);
    assert!(
        raw.stdout == padded,
        "read of the sparse raw base differs from its bytes"
    );

    // Ranges with edges in every kind of place, of sizes around the
    // stream's segment (2 MiB) so that several threads share one read.
    let k = 1024u64;
    let m = 1024 * k;
    let ranges = [
        (0, 1),
        (63 * k + 7, 3),
        (10 * m - 5, 4 * m + 11),
        (m + 100, 2 * m),
        (2 * m + 17, 5 * m),
        (3100 * k - 1, 42 * k),
        (6 * m - 1, m + 2),
        (12 * m + 4095, 9 * m),
        (20 * m + 1, 4 * m - 1),
        (0, flat.len() as u64),
    ];
    for (off, len) in ranges {
        let out = layerscope(
            d,
            &[
                "read",
                "--offset",
                &off.to_string(),
                "--length",
                &len.to_string(),
                "top.qcow2",
            ],
        )
        .ok();
        let want = &flat[off as usize..(off + len) as usize];
        assert!(
            out.stdout == want,
            "read --offset {off} --length {len} differs from qemu-img convert"
        );
    }

    // To a regular file: sparse like qemu-img's, same bytes.
    let file = fs::File::create(d.join("out.raw")).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(["read", "top.qcow2"])
        .current_dir(d)
        .stdout(file)
        .status()
        .unwrap();
    assert!(status.success());
    sh(d, &["cmp", "out.raw", "flat.raw"]);

    // The hit totals of a whole read cover the disk exactly once.
    let hits = layerscope(d, &["read", "--hits", "top.qcow2"]).ok();
    let line: serde_json::Value = serde_json::from_str(hits.stderr.trim()).unwrap();
    let served: u64 = line["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["bytes"].as_u64().unwrap())
        .sum::<u64>()
        + line["nowhere"]["bytes"].as_u64().unwrap();
    assert_eq!(served, flat.len() as u64, "{line}");
    // The raw base served its holes as well as its data: bytes from
    // layer 0 are all that the upper layers do not cover.
    let layer = |i: usize| line["layers"][i]["bytes"].as_u64().unwrap();
    assert!(layer(0) > 0 && layer(1) > 0 && layer(2) > 0, "{line}");
}

/// The bulk path (`stream`: reader threads, zero runs passed as lengths,
/// raw holes found with SEEK_DATA/SEEK_HOLE) and the cached path
/// (`BlockCache::read_at` over the layered reader, as the filesystems and
/// the TUI read) return the bytes of qemu-img convert for the same
/// random ranges: small ones (served from the cache's chunks) and large
/// ones (passed through), with edges anywhere, so they start and end in
/// holes, zero clusters, compressed clusters and across layer boundaries.
#[test]
fn bulk_and_cached_reads_agree_with_qemu_img_convert_at_random() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_chain(d);
    let flat = fs::read(d.join("flat.raw")).unwrap();
    let top = d.join("top.qcow2");
    let chain = open_chain(top.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let reader = std::sync::Arc::new(LayeredReader::new(&chain).unwrap());
    assert_eq!(reader.len(), flat.len() as u64);
    let cache = BlockCache::new(reader.clone(), 8 << 20);
    let size = flat.len();
    let mut rng = Rng(0x5eed_1919);
    let (mut data_edges, mut zero_pieces, mut stored_runs) = (0, 0, 0);
    for round in 0..300 {
        // Mostly small reads, every fourth up to 6 MiB (several segments).
        let max = if round % 4 == 0 { 6 << 20 } else { 300 << 10 };
        let len = 1 + rng.below(max);
        let off = rng.below(size - len.min(size - 1));
        let len = len.min(size - off);
        let want = &flat[off..off + len];

        // Every other round, runs kept as-is in a file come as its
        // ranges (what `read` to a file copies in the kernel), read here.
        let kernel = round % 2 == 1;
        let mut bulk = Vec::with_capacity(len);
        stream_with(
            &reader,
            off as u64,
            len as u64,
            1 + round % 3,
            kernel,
            &mut |piece| {
                match piece {
                    Piece::Data(bytes) => {
                        data_edges += 1;
                        bulk.extend_from_slice(bytes);
                    }
                    Piece::Zeros(n) => {
                        zero_pieces += 1;
                        bulk.resize(bulk.len() + n as usize, 0);
                    }
                    Piece::Stored(run) => {
                        use std::os::unix::fs::FileExt;
                        assert!(kernel, "a stored run in a stream that did not ask");
                        stored_runs += 1;
                        let at = bulk.len();
                        bulk.resize(at + run.len as usize, 0);
                        run.file.read_exact_at(&mut bulk[at..], run.host)?;
                    }
                }
                Ok(())
            },
        )
        .unwrap();
        assert!(
            bulk == want,
            "bulk read of {len} bytes at {off} differs from qemu-img convert"
        );

        let mut cached = vec![0xa5u8; len];
        cache.read_at(off as u64, &mut cached).unwrap();
        assert!(
            cached == want,
            "cached read of {len} bytes at {off} differs from qemu-img convert"
        );
    }
    // Both kinds of pieces were met: the ranges crossed data and zeros.
    assert!(
        data_edges > 100 && zero_pieces > 100 && stored_runs > 50,
        "{data_edges} data, {zero_pieces} zero pieces, {stored_runs} stored runs"
    );
}

/// The ranges `[start, end)` of `file` that hold data (SEEK_DATA /
/// SEEK_HOLE).
fn data_ranges(file: &fs::File) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let len = file.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let Ok(start) = seek(file, SeekFrom::Data(at)) else {
            break;
        };
        let end = seek(file, SeekFrom::Hole(start)).unwrap();
        out.push((start, end));
        at = end;
    }
    out
}

/// `read` to a regular file has the kernel copy what layers keep as-is
/// in their files (copy_file_range on the same filesystem, sendfile
/// across, e.g. to tmpfs): the bytes are qemu-img convert's over every
/// kind of range (raw holes and data, zero, compressed and plain
/// clusters, layer boundaries, a backing file shorter than the overlay,
/// a range that starts and ends mid-cluster); every range that qemu-img
/// map says reads as zeros is a hole in the output; and zero blocks
/// stored as data in a plain cluster are data, as with qemu-img convert
/// -C, which shows the bytes were not read and scanned. The hit totals
/// still cover the disk once. Data clusters over holes of the qcow2 file
/// (preallocation=metadata) stay holes.
#[test]
fn read_to_a_file_is_a_kernel_copy_with_qemus_bytes_and_holes() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_chain(d);
    // An overlay larger than its 24 MiB backing chain, with data past the
    // backing's end, a zero cluster, and a cluster of zeros stored as data.
    sh(
        d,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "top.qcow2",
            "-F",
            "qcow2",
            "big.qcow2",
            "32M",
        ],
    );
    qemu_io(
        d,
        "big.qcow2",
        &[
            "write -P 0x61 30m 1m",
            "write -P 0x62 23m 1536k",
            "write -z 26m 64k",
            "write -P 0 8m 64k",
            "write -P 0x63 8260k 4k",
        ],
    );
    sh(
        d,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            "big.qcow2",
            "big-flat.raw",
        ],
    );
    let flat = fs::read(d.join("big-flat.raw")).unwrap();
    assert_eq!(flat.len(), 32 << 20);
    let map = crate::util::qemu_map(d, "big.qcow2");
    let zero_ranges: Vec<(u64, u64)> = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["data"].as_bool().unwrap())
        .map(|e| {
            let s = e["start"].as_u64().unwrap();
            (s, s + e["length"].as_u64().unwrap())
        })
        .collect();
    assert!(zero_ranges.len() > 3, "{map}");

    let shm = Path::new("/dev/shm");
    let shm_dir = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
    let mut outs = vec![d.join("out.raw")];
    outs.extend(shm_dir.as_ref().map(|t| t.path().join("out.raw")));
    for out in &outs {
        for (off, len) in [(0u64, flat.len() as u64), (6 * (1 << 20) + 12345, 20 << 20)] {
            let file = fs::File::create(out).unwrap();
            let run = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
                .args(["read", "--hits", "--offset", &off.to_string()])
                .args(["--length", &len.to_string(), "big.qcow2"])
                .current_dir(d)
                .stdout(file)
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            let got = fs::read(out).unwrap();
            assert!(
                got == flat[off as usize..(off + len) as usize],
                "read --offset {off} --length {len} to {} differs from qemu-img convert",
                out.display()
            );
            let hits: serde_json::Value =
                serde_json::from_str(String::from_utf8_lossy(&run.stderr).trim()).unwrap();
            let served: u64 = hits["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["bytes"].as_u64().unwrap())
                .sum::<u64>()
                + hits["nowhere"]["bytes"].as_u64().unwrap();
            assert_eq!(served, len, "{hits}");

            // Holes where the image reads as zeros by its metadata (the
            // whole 4 KiB blocks inside each such range of the output).
            let data = data_ranges(&fs::File::open(out).unwrap());
            for &(s, e) in &zero_ranges {
                let (s, e) = (s.max(off) - off, e.min(off + len).saturating_sub(off));
                let (s, e) = (s.next_multiple_of(4096), e / 4096 * 4096);
                if s >= e {
                    continue;
                }
                assert!(
                    data.iter().all(|&(a, b)| b <= s || a >= e),
                    "{}: data in [{s:#x}, {e:#x}), which reads as zeros: {data:x?}",
                    out.display()
                );
            }
            // The plain cluster of zeros at 8 MiB was copied, not read.
            if off == 0 {
                let z = 8u64 << 20;
                assert!(
                    data.iter().any(|&(a, b)| a <= z && b >= z + 4096),
                    "{}: the zeros stored at 8 MiB were read and made a hole: {data:x?}",
                    out.display()
                );
            }
        }
    }

    // Preallocated metadata: every cluster is data, in a file of holes.
    sh(
        d,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "preallocation=metadata",
            "pre.qcow2",
            "16M",
        ],
    );
    qemu_io(d, "pre.qcow2", &["write -P 0x71 5m 1m"]);
    let want = crate::util::qemu_raw(d, "pre.qcow2", &[]);
    for out in &outs {
        let file = fs::File::create(out).unwrap();
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
            .args(["read", "pre.qcow2"])
            .current_dir(d)
            .stdout(file)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(
            fs::read(out).unwrap() == want,
            "pre.qcow2 to {}",
            out.display()
        );
        let data = data_ranges(&fs::File::open(out).unwrap());
        assert_eq!(data, [(5 << 20, 6 << 20)], "{}", out.display());
    }
}

/// VHD, VDI and VHDX data blocks and VMDK extents are plain bytes of
/// their files: `read` to a
/// file (same filesystem: copy_file_range; /dev/shm: sendfile) gives
/// `qemu-img convert -f FMT -O raw`'s bytes, and what qemu-img map says
/// reads as zeros is a hole, for fixed and dynamic VHD, static and
/// dynamic VDI, sparse and flat VMDK, dynamic and fixed VHDX made from
/// a raw disk with data, holes and a zero MiB.
#[test]
fn vhd_vdi_vmdk_and_vhdx_blocks_read_to_a_file_with_qemus_bytes_and_holes() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        &["qemu-img", "create", "-q", "-f", "raw", "src.raw", "24M"],
    );
    sh(
        d,
        &[
            "qemu-io",
            "-f",
            "raw",
            "-c",
            "write -P 0x61 1m 3m",
            "-c",
            "write -P 0x62 10m 512k",
            "-c",
            "write -P 0 12m 1m",
            "-c",
            "write -P 0x63 20m 4k",
            "src.raw",
        ],
    );
    let shm = Path::new("/dev/shm");
    let shm_dir = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
    let mut outs = vec![d.join("out.raw")];
    outs.extend(shm_dir.as_ref().map(|t| t.path().join("out.raw")));
    for (fmt, opts) in [
        ("vpc", "subformat=fixed"),
        ("vpc", "subformat=dynamic"),
        ("vdi", "static=on"),
        ("vdi", "static=off"),
        ("vmdk", "subformat=monolithicSparse"),
        ("vmdk", "subformat=monolithicFlat"),
        ("vhdx", "subformat=dynamic"),
        ("vhdx", "subformat=fixed"),
    ] {
        let image = format!("{fmt}-{opts}.img");
        sh(
            d,
            &[
                "qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, "-o", opts, "src.raw", &image,
            ],
        );
        let want = crate::util::qemu_raw(d, &image, &["-f", fmt]);
        let map: serde_json::Value = serde_json::from_slice(
            &sh(d, &["qemu-img", "map", "--output=json", "-f", fmt, &image]).stdout,
        )
        .unwrap();
        for out in &outs {
            let file = fs::File::create(out).unwrap();
            let status = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
                .args(["read", "-f", fmt, &image])
                .current_dir(d)
                .stdout(file)
                .status()
                .unwrap();
            assert!(status.success());
            assert!(
                fs::read(out).unwrap() == want,
                "{image} to {} differs from qemu-img convert",
                out.display()
            );
            let data = data_ranges(&fs::File::open(out).unwrap());
            for e in map
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["data"] == false)
            {
                let s = e["start"].as_u64().unwrap();
                let end = s + e["length"].as_u64().unwrap();
                let (s, end) = (s.next_multiple_of(4096), end / 4096 * 4096);
                assert!(
                    data.iter().all(|&(a, b)| b <= s || a >= end),
                    "{image} to {}: data in [{s:#x}, {end:#x}), which reads as zeros: {data:x?}",
                    out.display()
                );
            }
        }
    }
}
