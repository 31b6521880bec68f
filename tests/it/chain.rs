//! Chains built with qemu-img/qemu-io/mke2fs/debugfs in each test, and
//! everything layerscope says about them compared with qemu:
//! `map --json` = `qemu-img map --output=json`; `read` = `qemu-img convert
//! -O raw`; `chain --json` = `qemu-img info --backing-chain`; and the bytes
//! each layer served in a full read (the hit map) = what qemu's map assigns
//! to that layer.
use std::path::Path;

use serde_json::Value;

use crate::util::*;

/// All four comparisons for IMAGE, run from `cwd`.
fn check(cwd: &Path, image: &str) {
    check_map(cwd, image);
    check_read(cwd, image);
    check_chain(cwd, image);
    check_hits(cwd, image);
}

fn check_map(cwd: &Path, image: &str) {
    let ours = layerscope(cwd, &["map", "--json", image]).ok().json();
    let theirs = qemu_map(cwd, image);
    assert_eq!(
        ours, theirs,
        "map --json of {image} differs from qemu-img map"
    );
}

fn check_read(cwd: &Path, image: &str) {
    let flat = cwd.join(format!("{}.qemu-flat", image.replace('/', "_")));
    sh(
        cwd,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            image,
            flat.to_str().unwrap(),
        ],
    );
    let theirs = std::fs::read(&flat).unwrap();
    std::fs::remove_file(&flat).unwrap();
    let ours = layerscope(cwd, &["read", image]).ok().stdout;
    assert_eq!(ours.len(), theirs.len(), "read length of {image}");
    if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("read of {image} differs from qemu-img convert at byte {at:#x}");
    }
}

/// Sum of `length` of qemu map entries matching `pred`.
fn sum(map: &Value, pred: impl Fn(&Value) -> bool) -> u64 {
    map.as_array()
        .unwrap()
        .iter()
        .filter(|e| pred(e))
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

fn check_chain(cwd: &Path, image: &str) {
    let ours = layerscope(cwd, &["chain", "--json", image]).ok().json();
    let theirs = qemu_info_chain(cwd, image);
    let (ours, theirs) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(ours.len(), theirs.len(), "chain length of {image}");
    for (depth, (o, t)) in ours.iter().zip(theirs).enumerate() {
        let what = format!("{image}, layer at depth {depth}");
        for key in [
            "filename",
            "format",
            "virtual-size",
            "actual-size",
            "cluster-size",
            "backing-filename",
            "full-backing-filename",
            "backing-filename-format",
            "dirty-flag",
        ] {
            assert_eq!(o.get(key), t.get(key), "{what}: {key}");
        }
        assert_eq!(o["depth"], depth, "{what}: depth");
        assert_eq!(o["index"], ours.len() - 1 - depth, "{what}: index");
        if t["format"] == "qcow2" || t["format"] == "raw" {
            // qemu's whole object is in ours, key for key (ours has more
            // keys beside them), so scripts written for qemu-img work.
            for (key, value) in t.as_object().unwrap() {
                if key == "snapshots" {
                    assert_eq!(
                        o["snapshot-count"],
                        value.as_array().unwrap().len(),
                        "{what}"
                    );
                }
                assert_eq!(o.get(key), Some(value), "{what}: {key}");
            }
        }
        let path = cwd.join(t["filename"].as_str().unwrap());
        let file_size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(o["file-size"], file_size, "{what}: file-size");
        if t["format"] == "qcow2" {
            // Ours has every qcow2 key, whatever qemu leaves out for v2.
            for key in [
                "cluster-size",
                "qcow2-version",
                "compat",
                "compression-type",
                "extended-l2",
                "refcount-bits",
                "dirty-flag",
                "corrupt",
                "allocated-bytes",
            ] {
                assert!(o.get(key).is_some(), "{what}: no {key} in {o}");
            }
            let version = if o["compat"] == "0.10" { 2 } else { 3 };
            assert_eq!(o["qcow2-version"], version, "{what}: qcow2-version");
            // Every qcow2 fact qemu prints (v2 images have fewer).
            let data = t["format-specific"]["data"].as_object().unwrap();
            for key in [
                "compat",
                "compression-type",
                "refcount-bits",
                "corrupt",
                "lazy-refcounts",
                "extended-l2",
            ] {
                if let Some(v) = data.get(key) {
                    assert_eq!(&o[key], v, "{what}: {key}");
                }
            }
            // What this file holds by itself: qemu's map of it without its
            // backing file.
            let file = t["filename"].as_str().unwrap();
            let alone = format!(
                r#"json:{{"driver":"qcow2","backing":null,"file":{{"driver":"file","filename":"{file}"}}}}"#
            );
            let held = sum(&qemu_map(cwd, &alone), |e| e["present"] == true);
            assert_eq!(o["allocated-bytes"], held, "{what}: allocated bytes");
        }
    }
}

fn check_hits(cwd: &Path, image: &str) {
    let run = layerscope(cwd, &["read", "--hits", image]).ok();
    let hits: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    let map = qemu_map(cwd, image);
    let layers = hits["layers"].as_array().unwrap();
    let top = layers.len() as u64 - 1;
    for l in layers {
        let depth = top - l["index"].as_u64().unwrap();
        let expected = sum(&map, |e| e["present"] == true && e["depth"] == depth);
        assert_eq!(
            l["bytes"], expected,
            "{image}: bytes served by layer {}",
            l["index"]
        );
    }
    assert_eq!(
        hits["nowhere"]["bytes"],
        sum(&map, |e| e["present"] == false),
        "{image}: zeros from no layer"
    );
}

fn tools() -> bool {
    need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")
}

/// An ext4 base as qcow2 with `create_opts`, plus its raw image.
fn ext4_base(dir: &Path, opts: &str) {
    mkfs(dir, "base", "32M", 40);
    let mut args = vec!["qemu-img", "convert", "-O", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend(["base.raw", "base.qcow2"]);
    sh(dir, &args);
}

/// Edits a copy of FROM into TO with debugfs: adds, changes, deletes.
fn edit(dir: &Path, from: &str, to: &str, tag: &str) {
    std::fs::copy(dir.join(from), dir.join(to)).unwrap();
    let payload = dir.join(format!("{tag}.payload"));
    let body: Vec<u8> = (0..150_000u32)
        .map(|i| (i % 97) as u8 ^ tag.len() as u8)
        .collect();
    std::fs::write(&payload, body).unwrap();
    let p = payload.to_str().unwrap();
    debugfs_w(dir, to, &format!("mkdir /{tag}\nwrite {p} /{tag}/new.bin\nrm /d1/s1/f1.bin\nrm /hello.txt\nwrite {p} /hello.txt\n"));
}

#[test]
fn thin_overlay_with_file_edits() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_base(dir, "");
    edit(dir, "base.raw", "edit.raw", "one");
    thin_overlay(
        dir,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("edit.raw"),
        "",
        false,
    );
    check(dir, "top.qcow2");
    check(dir, "base.qcow2");
}

#[test]
fn compressed_overlays_zlib_and_zstd() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_base(dir, "");
    edit(dir, "base.raw", "e1.raw", "zl");
    thin_overlay(
        dir,
        "zlib.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("e1.raw"),
        "",
        true,
    );
    edit(dir, "e1.raw", "e2.raw", "zs");
    thin_overlay(
        dir,
        "zstd.qcow2",
        "zlib.qcow2",
        "qcow2",
        &dir.join("e2.raw"),
        "compression_type=zstd",
        true,
    );
    let info = qemu_map(dir, "zstd.qcow2");
    assert!(
        info.as_array()
            .unwrap()
            .iter()
            .any(|e| e["compressed"] == true && e["depth"] == 0),
        "no compressed cluster in the zstd layer"
    );
    check(dir, "zstd.qcow2");
    // A whole image compressed, both ways.
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "compression_type=zstd",
            "base.raw",
            "allzstd.qcow2",
        ],
    );
    check(dir, "allzstd.qcow2");
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-c",
            "-O",
            "qcow2",
            "base.raw",
            "allzlib.qcow2",
        ],
    );
    check(dir, "allzlib.qcow2");
}

#[test]
fn zero_clusters_and_partial_writes() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_base(dir, "");
    sh(
        dir,
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
    // Zeros over data (plain zero cluster), a zero over an allocated
    // cluster (zero-alloc), a partial write (copy-on-write of a cluster).
    qemu_io(
        dir,
        "top.qcow2",
        &[
            "write -z 0x100000 128k",
            "write -P 0x5a 0x300000 64k",
            "write -z 0x300000 64k",
            "write -P 0x11 0x401000 512",
            "write -z 0x1ff0000 64k",
        ],
    );
    check(dir, "top.qcow2");
}

#[test]
fn raw_backing_file() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "24M", 30);
    // Make it sparse with a hole in the middle, as raw images often are.
    sh(
        dir,
        &[
            "fallocate",
            "--punch-hole",
            "--offset",
            "8M",
            "--length",
            "4M",
            "base.raw",
        ],
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
            "base.raw",
            "-F",
            "raw",
            "top.qcow2",
        ],
    );
    qemu_io(
        dir,
        "top.qcow2",
        &["write -P 0x22 0x200000 64k", "write -z 0x900000 64k"],
    );
    check(dir, "top.qcow2");
    check(dir, "base.raw");
}

#[test]
fn overlay_in_another_directory_with_relative_backing_path() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("images/base")).unwrap();
    std::fs::create_dir_all(dir.join("images/vm")).unwrap();
    std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
    let base = dir.join("images/base");
    ext4_base(&base, "");
    edit(&base, "base.raw", "edit.raw", "rel");
    thin_overlay(
        dir,
        "images/vm/top.qcow2",
        "../base/base.qcow2",
        "qcow2",
        &base.join("edit.raw"),
        "",
        false,
    );
    // Run from a directory where the backing path means nothing.
    check(&dir.join("elsewhere"), "../images/vm/top.qcow2");
    check(dir, "images/vm/top.qcow2");
}

#[test]
fn four_deep_chain_with_mixed_cluster_sizes() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_base(dir, "cluster_size=4096");
    edit(dir, "base.raw", "e1.raw", "l1");
    thin_overlay(
        dir,
        "l1.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("e1.raw"),
        "cluster_size=65536",
        false,
    );
    edit(dir, "e1.raw", "e2.raw", "l2");
    thin_overlay(
        dir,
        "l2.qcow2",
        "l1.qcow2",
        "qcow2",
        &dir.join("e2.raw"),
        "cluster_size=2M",
        true,
    );
    edit(dir, "e2.raw", "e3.raw", "l3");
    thin_overlay(
        dir,
        "l3.qcow2",
        "l2.qcow2",
        "qcow2",
        &dir.join("e3.raw"),
        "cluster_size=4096",
        false,
    );
    let chain = layerscope(dir, &["chain", "--json", "l3.qcow2"])
        .ok()
        .json();
    assert_eq!(chain.as_array().unwrap().len(), 4);
    check(dir, "l3.qcow2");
}

#[test]
fn cluster_sizes_4k_64k_2m() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "16M", 20);
    for cs in ["4096", "65536", "2M"] {
        let img = format!("c{cs}.qcow2");
        sh(
            dir,
            &[
                "qemu-img",
                "convert",
                "-O",
                "qcow2",
                "-o",
                &format!("cluster_size={cs}"),
                "base.raw",
                &img,
            ],
        );
        let top = format!("t{cs}.qcow2");
        sh(
            dir,
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("cluster_size={cs}"),
                "-b",
                &img,
                "-F",
                "qcow2",
                &top,
            ],
        );
        qemu_io(
            dir,
            &top,
            &[
                "write -P 0x33 0x123000 0x5000",
                "write -z 0xa00000 0x200000",
            ],
        );
        check(dir, &top);
    }
}

#[test]
fn qcow2_version_2_and_extended_l2() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "16M", 20);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "-o",
            "compat=0.10",
            "base.raw",
            "v2.qcow2",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "-b",
            "v2.qcow2",
            "-F",
            "qcow2",
            "v2top.qcow2",
        ],
    );
    qemu_io(dir, "v2top.qcow2", &["write -P 0x44 0x10000 0x10000"]);
    check(dir, "v2top.qcow2");
    // Extended L2: 4 KiB subclusters of 128 KiB clusters, written piecemeal.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on,cluster_size=128k",
            "-b",
            "v2.qcow2",
            "-F",
            "qcow2",
            "ext.qcow2",
        ],
    );
    qemu_io(
        dir,
        "ext.qcow2",
        &[
            "write -P 0x55 0x1000 0x1000",
            "write -P 0x56 0x4000 0x3000",
            "write -z 0x20000 0x2000",
            "write -z 0x80000 0x20000",
            "write -P 0x57 0x81000 0x1000",
        ],
    );
    check(dir, "ext.qcow2");
}

#[test]
fn overlay_larger_than_its_backing_file() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "16M", 10);
    sh(
        dir,
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
        dir,
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
            "big.qcow2",
            "40M",
        ],
    );
    qemu_io(
        dir,
        "big.qcow2",
        &[
            "write -P 0x66 0xff0000 0x20000",
            "write -P 0x67 0x2000000 0x10000",
        ],
    );
    check(dir, "big.qcow2");
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
            "bigraw.qcow2",
            "20M",
        ],
    );
    check(dir, "bigraw.qcow2");
}

#[test]
fn metadata_preallocation() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for p in ["metadata", "falloc", "full"] {
        let img = format!("{p}.qcow2");
        sh(
            dir,
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("preallocation={p}"),
                &img,
                "8M",
            ],
        );
        qemu_io(dir, &img, &["write -P 0x77 1M 64k"]);
        check(dir, &img);
    }
}

#[test]
fn one_tebibyte_chain_with_a_few_clusters() {
    if !tools() {
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
            "base.qcow2",
            "1T",
        ],
    );
    qemu_io(
        dir,
        "base.qcow2",
        &[
            "write -P 1 0 64k",
            "write -P 2 512G 64k",
            "write -P 3 1099511562240 64k",
        ],
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
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(
        dir,
        "top.qcow2",
        &[
            "write -P 4 100G 128k",
            "write -z 200G 1M",
            "write -c -P 5 300G 64k",
        ],
    );
    check_map(dir, "top.qcow2");
    check_chain(dir, "top.qcow2");
    // Windows of the disk, compared with `qemu-io -c "read -v"` of them.
    for (off, len) in [
        (0u64, 65536u64),
        (100 << 30, 131072),
        (200 << 30, 65536),
        (300 << 30, 65536),
        (512 << 30, 65536),
        ((1 << 40) - 65536, 65536),
    ] {
        let theirs = qemu_io_read(dir, "top.qcow2", off, len);
        let ours = layerscope(
            dir,
            &[
                "read",
                "top.qcow2",
                "--offset",
                &off.to_string(),
                "--length",
                &len.to_string(),
            ],
        )
        .ok()
        .stdout;
        assert_eq!(ours.len(), theirs.len());
        assert!(
            ours == theirs,
            "window at {off:#x} differs from qemu-io read"
        );
    }
}

#[test]
fn embedded_demo_chain_opens_with_no_arguments() {
    let dir = std::env::temp_dir();
    let run = layerscope(&dir, &[]).ok();
    let text = run.text();
    assert!(text.contains("3 layers"), "{text}");
    assert!(text.contains("[demo]/update.qcow2"), "{text}");
    assert!(text.contains("what each layer serves"), "{text}");
}

#[test]
fn demo_assets_agree_with_qemu() {
    if !tools() {
        return;
    }
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let d = tempfile::tempdir().unwrap();
    for f in ["base.qcow2", "update.qcow2", "top.qcow2"] {
        std::fs::copy(assets.join(f), d.path().join(f)).unwrap();
    }
    check(d.path(), "top.qcow2");
}

/// Bytes of IMAGE flattened by `qemu-img convert -O raw`.
fn qemu_flat(cwd: &Path, image: &str) -> Vec<u8> {
    let flat = tempfile::NamedTempFile::new_in(cwd).unwrap();
    sh(
        cwd,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            image,
            flat.path().to_str().unwrap(),
        ],
    );
    std::fs::read(flat.path()).unwrap()
}

/// Block numbers of a file in a raw ext image, from `debugfs blocks`.
fn blocks_of(dir: &Path, image: &str, path: &str) -> Vec<u64> {
    let out = sh(dir, &["debugfs", "-R", &format!("blocks {path}"), image]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect()
}

#[test]
fn thin_overlays_cluster_by_cluster_with_qemu_io() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_base(dir, "cluster_size=65536");
    // update: file edits, every changed cluster compressed (zlib).
    edit(dir, "base.raw", "e1.raw", "update");
    let compressed = Writes {
        compress: true,
        zeros: false,
    };
    let n1 = thin_overlay_io(
        dir,
        "update.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("e1.raw"),
        "",
        compressed,
    );
    // zstd: more edits, compressed with zstd.
    edit(dir, "e1.raw", "e2.raw", "zstd");
    let n2 = thin_overlay_io(
        dir,
        "zstd.qcow2",
        "update.qcow2",
        "qcow2",
        &dir.join("e2.raw"),
        "compression_type=zstd",
        compressed,
    );
    // top: a 300 KB file deleted and its blocks zeroed (as a guest's
    // discard would), a new file; plain clusters and zero clusters.
    std::fs::copy(dir.join("e2.raw"), dir.join("e3.raw")).unwrap();
    let gone = blocks_of(dir, "e3.raw", "/d5/s2/f5.bin");
    assert!(gone.len() > 40, "{gone:?}");
    debugfs_w(dir, "e3.raw", "rm /d5/s2/f5.bin\n");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("e3.raw"))
            .unwrap();
        for b in &gone {
            f.seek(SeekFrom::Start(b * 4096)).unwrap();
            f.write_all(&[0u8; 4096]).unwrap();
        }
    }
    debugfs_w(dir, "e3.raw", "mkdir /top\nsymlink /top/link /d0\n");
    let n3 = thin_overlay_io(
        dir,
        "top.qcow2",
        "zstd.qcow2",
        "qcow2",
        &dir.join("e3.raw"),
        "",
        Writes {
            compress: false,
            zeros: true,
        },
    );
    // The chain really is what was meant: qemu flattens it to e3.raw, each
    // overlay holds exactly the clusters written, with the right kinds.
    assert!(
        qemu_flat(dir, "top.qcow2") == std::fs::read(dir.join("e3.raw")).unwrap(),
        "the overlays do not rebuild the edited image"
    );
    let chain = layerscope(dir, &["chain", "--json", "top.qcow2"])
        .ok()
        .json();
    for (depth, n) in [(0usize, n3), (1, n2), (2, n1)] {
        assert!(n > 0, "layer at depth {depth} holds nothing");
        assert_eq!(
            chain[depth]["allocated-bytes"],
            n as u64 * 65536,
            "depth {depth}"
        );
    }
    assert_eq!(chain[1]["compression-type"], "zstd");
    let map = qemu_map(dir, "top.qcow2");
    let has = |pred: &dyn Fn(&Value) -> bool| map.as_array().unwrap().iter().any(pred);
    assert!(has(&|e| e["depth"] == 2 && e["compressed"] == true));
    assert!(has(&|e| e["depth"] == 1 && e["compressed"] == true));
    assert!(has(&|e| e["depth"] == 0
        && e["zero"] == true
        && e["present"] == true));
    check(dir, "top.qcow2");
    check(dir, "update.qcow2");
}

/// The same overlay named in different ways: `filename` is exactly what was
/// given, and backing paths are joined to its directory as written, not
/// canonicalised (so a symlink to an overlay in another directory finds
/// nothing there, in qemu too).
#[test]
fn path_spellings_resolve_like_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("real")).unwrap();
    std::fs::create_dir_all(dir.join("other")).unwrap();
    let real = dir.join("real");
    mkfs(&real, "base", "8M", 8);
    sh(
        &real,
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
        &real,
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
    qemu_io(&real, "top.qcow2", &["write -P 0x42 1M 64k"]);
    let absolute = real.join("top.qcow2");
    for image in [
        "./real/top.qcow2",
        "real//top.qcow2",
        "real/../real/top.qcow2",
        absolute.to_str().unwrap(),
    ] {
        check_chain(dir, image);
        check_map(dir, image);
    }
    // Through a symlink in another directory: "base.qcow2" is looked for
    // beside the link; qemu fails to open it, and so must we.
    std::os::unix::fs::symlink("../real/top.qcow2", dir.join("other/top.qcow2")).unwrap();
    let qemu = std::process::Command::new("qemu-img")
        .args(["info", "--backing-chain", "other/top.qcow2"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!qemu.status.success(), "qemu opened it after all");
    let run = layerscope(dir, &["chain", "other/top.qcow2"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("other/base.qcow2"), "{}", run.stderr);
}

/// Replaces the backing-format header extension of a qcow2 file by an
/// unknown one (which qemu ignores): the header then names no format.
fn drop_backing_format(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let at = data
        .windows(4)
        .take(4096)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .expect("a backing format extension");
    data[at..at + 4].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    std::fs::write(path, data).unwrap();
}

#[test]
fn unrecorded_backing_format_is_probed_or_forced() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "8M", 8);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "base.raw",
            "base.qcow2",
        ],
    );
    for (backing, fmt) in [("base.raw", "raw"), ("base.qcow2", "qcow2")] {
        let top = format!("over-{fmt}.qcow2");
        sh(
            dir,
            &[
                "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt, &top,
            ],
        );
        qemu_io(dir, &top, &["write -P 0x24 2M 64k", "write -z 4M 64k"]);
        drop_backing_format(&dir.join(&top));
        let info = qemu_info_chain(dir, &top);
        assert!(info[0].get("backing-filename-format").is_none(), "{info}");
        assert_eq!(info[1]["format"], fmt, "qemu probes the backing file");
        check(dir, &top);
    }
    // Forced: the qcow2 base read as a raw disk, as qemu does when told so.
    let spec = r#"json:{"driver":"qcow2","file":{"driver":"file","filename":"over-qcow2.qcow2"},"backing":{"driver":"raw","file":{"driver":"file","filename":"base.qcow2"}}}"#;
    let ours = layerscope(
        dir,
        &[
            "map",
            "--json",
            "--backing-format",
            "raw",
            "over-qcow2.qcow2",
        ],
    )
    .ok()
    .json();
    assert_eq!(ours, qemu_map(dir, spec), "map with --backing-format raw");
    let ours = layerscope(
        dir,
        &["read", "--backing-format", "raw", "over-qcow2.qcow2"],
    )
    .ok()
    .stdout;
    assert!(
        ours == qemu_flat(dir, spec),
        "read with --backing-format raw"
    );
    // Forced wrong: a raw file is not a qcow2 image.
    let run = layerscope(
        dir,
        &["chain", "--backing-format", "qcow2", "over-raw.qcow2"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("base.raw"), "{}", run.stderr);
}

#[test]
fn a_qcow2_file_read_with_format_raw() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "b.qcow2", "4M"],
    );
    sh(
        dir,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "t.qcow2",
        ],
    );
    qemu_io(dir, "t.qcow2", &["write -P 0x31 0 64k"]);
    let ours = layerscope(dir, &["map", "--json", "--format", "raw", "t.qcow2"])
        .ok()
        .json();
    let theirs: Value = serde_json::from_slice(
        &sh(
            dir,
            &["qemu-img", "map", "-f", "raw", "--output=json", "t.qcow2"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(ours, theirs);
    let ours = layerscope(dir, &["chain", "--json", "--format", "raw", "t.qcow2"])
        .ok()
        .json();
    assert_eq!(ours.as_array().unwrap().len(), 1, "{ours}");
    assert_eq!(ours[0]["format"], "raw");
    assert!(ours[0].get("backing-filename").is_none(), "{ours}");
    let theirs: Value = serde_json::from_slice(
        &sh(
            dir,
            &["qemu-img", "info", "-f", "raw", "--output=json", "t.qcow2"],
        )
        .stdout,
    )
    .unwrap();
    for key in ["filename", "format", "virtual-size", "actual-size"] {
        assert_eq!(ours[0][key], theirs[key], "{key}");
    }
    let bytes = layerscope(dir, &["read", "--format", "raw", "t.qcow2"])
        .ok()
        .stdout;
    assert!(bytes == std::fs::read(dir.join("t.qcow2")).unwrap());
}

/// `read --offset/--length` windows (unaligned, across clusters and layers,
/// at the very end, in every size spelling) are slices of qemu's flat image.
#[test]
fn read_windows_are_slices_of_the_flat_image() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "16M", 20);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-c",
            "-O",
            "qcow2",
            "base.raw",
            "base.qcow2",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(
        dir,
        "top.qcow2",
        &[
            "write -P 0x71 0xff00 0x300",
            "write -z 0x20000 0x3000",
            "write -P 0x72 0xfff000 0x1000",
        ],
    );
    let flat = qemu_flat(dir, "top.qcow2");
    let size = flat.len() as u64;
    let windows: &[(&str, &str, u64, u64)] = &[
        ("0", "1", 0, 1),
        ("511", "2", 511, 2),
        ("0xfffe", "0x203", 0xfffe, 0x203),
        ("65535", "70000", 65535, 70000),
        ("0x1ffff", "0x5002", 0x1ffff, 0x5002),
        ("0x400", "1K", 0x400, 1024),
        ("64K", "1MiB", 65536, 1 << 20),
        ("16777215", "1", size - 1, 1),
        ("16777116", "100", size - 100, 100),
        ("0x123", "0", 0x123, 0),
    ];
    for &(off, len, o, l) in windows {
        let ours = layerscope(
            dir,
            &["read", "top.qcow2", "--offset", off, "--length", len],
        )
        .ok()
        .stdout;
        assert!(
            ours == flat[o as usize..(o + l) as usize],
            "read --offset {off} --length {len}"
        );
    }
    // Only one of them: to the end, or from the start.
    let tail = layerscope(dir, &["read", "top.qcow2", "--offset", "15M"])
        .ok()
        .stdout;
    assert!(tail == flat[15 << 20..]);
    let head = layerscope(dir, &["read", "top.qcow2", "--length", "70001"])
        .ok()
        .stdout;
    assert!(head == flat[..70001]);
    let end = layerscope(dir, &["read", "top.qcow2", "--offset", "16M"])
        .ok()
        .stdout;
    assert!(end.is_empty());
}

/// A header whose backing file name is absent (offset 0, or size 0) but
/// which still carries a backing-format extension: qemu opens it as a lone
/// image and reports no backing-filename-format.
#[test]
fn backing_format_extension_without_a_backing_name() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "b.qcow2", "4M"],
    );
    sh(
        dir,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "t.qcow2",
        ],
    );
    qemu_io(dir, "t.qcow2", &["write -P 0x31 64k 64k"]);
    let good = std::fs::read(dir.join("t.qcow2")).unwrap();
    for (name, offset) in [("no-offset.qcow2", 8usize), ("no-size.qcow2", 16)] {
        let mut data = good.clone();
        let width = if offset == 8 { 8 } else { 4 };
        data[offset..offset + width].fill(0);
        std::fs::write(dir.join(name), data).unwrap();
        let info = qemu_info_chain(dir, name);
        assert_eq!(info.as_array().unwrap().len(), 1, "{info}");
        check(dir, name);
    }
}

/// Extended L2 with 64 KiB clusters (2 KiB subclusters) and zstd: writes of
/// 4 KiB and less into subclusters, a whole compressed cluster and a write
/// into it afterwards, zeroed subclusters and an unmapped zero cluster.
#[test]
fn extended_l2_64k_subclusters_with_zstd() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "b.qcow2", "4M"],
    );
    qemu_io(dir, "b.qcow2", &["write -P 1 0 4M"]);
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on,cluster_size=64k,compression_type=zstd",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            "e.qcow2",
        ],
    );
    qemu_io(
        dir,
        "e.qcow2",
        &[
            "write -P 2 0x1000 0x1000",
            "write -c -P 3 0x10000 64k",
            "write -z 0x21000 0x1000",
            "write -P 4 0x30000 0x800",
            "write -z -u 0x40000 64k",
            "write -c -P 5 0x50000 64k",
            "write -P 6 0x51000 0x1000",
        ],
    );
    check(dir, "e.qcow2");
}

/// qemu counts a disk in 512-byte sectors: a raw file's length is rounded
/// up (the tail reads as zeros, with its own map entry), and a qcow2
/// header's size is rounded down.
#[test]
fn sizes_that_are_not_whole_sectors() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(dir.join("odd.raw"), body).unwrap();
    check(dir, "odd.raw");
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "odd.raw",
            "-F",
            "raw",
            "over-odd.qcow2",
            "1M",
        ],
    );
    check(dir, "over-odd.qcow2");
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "s.qcow2", "1M"],
    );
    qemu_io(dir, "s.qcow2", &["write -P 9 0 1M"]);
    let mut data = std::fs::read(dir.join("s.qcow2")).unwrap();
    data[24..32].copy_from_slice(&1_000_100u64.to_be_bytes());
    std::fs::write(dir.join("size.qcow2"), data).unwrap();
    check(dir, "size.qcow2");
}
