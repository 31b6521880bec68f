//! The bulk read path (several reader threads, zero runs skipped, a raw
//! layer's holes found with SEEK_DATA/SEEK_HOLE) returns the same bytes as
//! qemu-img convert, for the whole disk and for ranges that start and end
//! inside holes, zero clusters, compressed clusters and layer boundaries,
//! and its hit-map totals add up to what was read.
use std::fs;

use crate::util::{layerscope, need, qemu_io, sh};

#[test]
fn bulk_reads_equal_qemu_img_convert_across_every_kind_of_range() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
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
