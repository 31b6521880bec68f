//! Bad input: each case gives exit 1, exactly one line on stderr that names
//! the file, and no panic. Corrupt images are made by patching the header
//! of a real qemu-made image.
use std::path::Path;

use crate::util::*;

/// Runs `map` on `image` and checks the failure shape; returns the line.
fn fails(cwd: &Path, args: &[&str], names: &str) -> String {
    let run = layerscope(cwd, args);
    assert_eq!(
        run.code,
        1,
        "{args:?} should fail with exit 1; stdout: {} stderr: {}",
        run.text(),
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one stderr line, got {:?}",
        run.stderr
    );
    assert!(lines[0].starts_with("layerscope: "), "{}", lines[0]);
    assert!(
        lines[0].contains(names),
        "{args:?}: message {:?} does not name {names:?}",
        lines[0]
    );
    lines[0].to_owned()
}

/// A copy of a valid image with `bytes` written at `offset`.
fn patched(dir: &Path, from: &str, to: &str, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(dir.join(from)).unwrap();
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(dir.join(to), data).unwrap();
}

#[test]
fn paths_that_are_not_images() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("adir")).unwrap();
    std::fs::write(dir.join("empty.img"), b"").unwrap();
    let l = fails(dir, &["map", "missing.qcow2"], "missing.qcow2");
    assert!(l.contains("No such file"), "{l}");
    let l = fails(dir, &["chain", "adir"], "adir");
    assert!(l.contains("directory"), "{l}");
    let l = fails(dir, &["read", "empty.img"], "empty.img");
    assert!(l.contains("empty"), "{l}");
    // Usage errors are exit 2 (clap), not 1.
    assert_eq!(layerscope(dir, &["map"]).code, 2);
    assert_eq!(layerscope(dir, &["read", "x", "--offset", "12Q"]).code, 2);
}

#[test]
fn corrupt_qcow2_headers() {
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
            "good.qcow2",
            "16M",
        ],
    );
    qemu_io(dir, "good.qcow2", &["write -P 1 0 64k"]);
    let good = std::fs::read(dir.join("good.qcow2")).unwrap();

    std::fs::write(dir.join("trunc.qcow2"), &good[..100]).unwrap();
    let l = fails(dir, &["map", "trunc.qcow2"], "trunc.qcow2");
    assert!(l.contains("truncated"), "{l}");
    std::fs::write(dir.join("short.qcow2"), &good[..0x30000]).unwrap();
    let l = fails(dir, &["map", "short.qcow2"], "short.qcow2");
    assert!(l.contains("passes the end of the file"), "{l}");

    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("garbage.qcow2"), &garbage).unwrap();
    let l = fails(dir, &["map", "garbage.qcow2"], "garbage.qcow2");
    assert!(l.contains("magic"), "{l}");
    patched(dir, "good.qcow2", "magic.qcow2", 0, b"QFI\0");
    let l = fails(dir, &["map", "magic.qcow2"], "magic.qcow2");
    assert!(l.contains("magic"), "{l}");
    // Named otherwise, a file without any magic is a raw disk (as in qemu);
    // asking for qcow2 says what is wrong.
    std::fs::write(dir.join("garbage.img"), &garbage).unwrap();
    let l = fails(
        dir,
        &["map", "--format", "qcow2", "garbage.img"],
        "garbage.img",
    );
    assert!(l.contains("not a qcow2 image"), "{l}");

    for (bits, name) in [(0u32, "cb0.qcow2"), (31, "cb31.qcow2")] {
        patched(dir, "good.qcow2", name, 20, &bits.to_be_bytes());
        let l = fails(dir, &["map", name], name);
        assert!(l.contains("cluster_bits"), "{l}");
    }
    patched(
        dir,
        "good.qcow2",
        "l1huge.qcow2",
        36,
        &0x7fff_ffffu32.to_be_bytes(),
    );
    let l = fails(dir, &["map", "l1huge.qcow2"], "l1huge.qcow2");
    assert!(l.contains("l1_size"), "{l}");
    patched(
        dir,
        "good.qcow2",
        "l1far.qcow2",
        40,
        &(1u64 << 40).to_be_bytes(),
    );
    let l = fails(dir, &["map", "l1far.qcow2"], "l1far.qcow2");
    assert!(l.contains("L1 table"), "{l}");
    patched(
        dir,
        "good.qcow2",
        "feature.qcow2",
        72,
        &(1u64 << 20).to_be_bytes(),
    );
    let l = fails(dir, &["map", "feature.qcow2"], "feature.qcow2");
    assert!(l.contains("unsupported") && l.contains("bit 20"), "{l}");
    patched(dir, "good.qcow2", "version.qcow2", 4, &7u32.to_be_bytes());
    let l = fails(dir, &["map", "version.qcow2"], "version.qcow2");
    assert!(l.contains("version 7"), "{l}");
}

#[test]
fn corrupt_tables_are_reported_with_their_offset() {
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
            "good.qcow2",
            "16M",
        ],
    );
    qemu_io(dir, "good.qcow2", &["write -P 1 0 64k"]);
    let good = std::fs::read(dir.join("good.qcow2")).unwrap();
    let l1 = u64::from_be_bytes(good[40..48].try_into().unwrap()) as usize;
    // L1 entry 0 pointing past the end of the file, and unaligned.
    let far = (0x8000_0000_0000_0000u64 | (1 << 40)).to_be_bytes();
    patched(dir, "good.qcow2", "l2far.qcow2", l1, &far);
    let l = fails(
        dir,
        &["read", "l2far.qcow2", "--length", "4096"],
        "l2far.qcow2",
    );
    assert!(
        l.contains("L2 table") && l.contains(&format!("{l1:#x}")),
        "{l}"
    );
    let odd = (0x8000_0000_0000_0000u64 | 0x30200).to_be_bytes();
    patched(dir, "good.qcow2", "l2odd.qcow2", l1, &odd);
    let l = fails(dir, &["map", "l2odd.qcow2"], "l2odd.qcow2");
    assert!(l.contains("not cluster-aligned"), "{l}");
}

#[test]
fn encrypted_image_is_unsupported() {
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
            "--object",
            "secret,id=sec0,data=abc",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
            "enc.qcow2",
            "1M",
        ],
    );
    let l = fails(dir, &["map", "enc.qcow2"], "enc.qcow2");
    assert!(l.contains("encrypted"), "{l}");
    // The cipher is named as qemu-img info names it (issue 17).
    let info: serde_json::Value = serde_json::from_slice(
        &sh(dir, &["qemu-img", "info", "--output=json", "enc.qcow2"]).stdout,
    )
    .unwrap();
    let e = &info["format-specific"]["data"]["encrypt"];
    for key in ["cipher-alg", "cipher-mode", "ivgen-alg", "hash-alg"] {
        let words = key.replace('-', " ");
        let want = format!("{words} {}", e[key].as_str().unwrap());
        assert!(l.contains(&want), "{want:?} not in {l}");
    }
}

#[test]
fn backing_loops_and_missing_backing_files() {
    if !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "a.qcow2", "16M"],
    );
    sh(
        dir,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img", "rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2",
        ],
    );
    let l = fails(dir, &["chain", "b.qcow2"], "b.qcow2");
    assert!(l.contains("loop"), "{l}");
    // A self-loop.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "self.qcow2",
            "1M",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "rebase",
            "-u",
            "-b",
            "self.qcow2",
            "-F",
            "qcow2",
            "self.qcow2",
        ],
    );
    fails(dir, &["map", "self.qcow2"], "self.qcow2");

    std::fs::create_dir(dir.join("sub")).unwrap();
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
            "../gone/base.qcow2",
            "-F",
            "qcow2",
            "sub/orphan.qcow2",
            "1M",
        ],
    );
    let l = fails(dir, &["map", "sub/orphan.qcow2"], "sub/orphan.qcow2");
    assert!(
        l.contains("backing file") && l.contains("sub/../gone/base.qcow2"),
        "names the path it tried: {l}"
    );
}

#[test]
fn chains_deeper_than_the_limit_are_refused() {
    if !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "l0.qcow2", "1M"],
    );
    for i in 1..=65 {
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
                &format!("l{}.qcow2", i - 1),
                "-F",
                "qcow2",
                &format!("l{i}.qcow2"),
                "1M",
            ],
        );
    }
    let l = fails(dir, &["chain", "l65.qcow2"], "l65.qcow2");
    assert!(l.contains("deeper than 64"), "{l}");
    // 64 layers are fine.
    layerscope(dir, &["map", "--json", "l63.qcow2"]).ok();
}

#[test]
fn other_image_formats_from_the_qemu_corpus() {
    let Some(corpus) = corpus() else { return };
    if !need("bzip2") || !need("qemu-img") {
        return;
    }
    let iotests = corpus.join("qemu-iotests");
    let manifest = std::fs::read_to_string(iotests.join("MANIFEST.tsv")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut seen = 0;
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, qemu_format) = (cols[0], cols[3]);
        let name = file.trim_end_matches(".bz2");
        let out = sh(dir, &["bzip2", "-dc", iotests.join(file).to_str().unwrap()]);
        std::fs::write(dir.join(name), &out.stdout).unwrap();
        seen += 1;
        if qemu_format == "raw" {
            // A real raw disk: detected as raw and readable.
            let chain = layerscope(dir, &["chain", "--json", name]).ok().json();
            assert_eq!(chain[0]["format"], "raw", "{name}");
            let run = layerscope(dir, &["read", name]).ok();
            assert!(run.stdout == out.stdout, "{name}: read is not the file");
            continue;
        }
        if ["vmdk", "vpc", "vhdx", "vdi"].contains(&qemu_format)
            || name.ends_with(".vmdk")
            || name.ends_with(".vhdx")
            || name.starts_with("afl5")
        {
            // Formats layerscope reads: compared with qemu in
            // tests/it/formats/.
            continue;
        }
        let l = fails(dir, &["map", name], name);
        assert!(
            l.contains("not an image format layerscope reads"),
            "{name}: {l}"
        );
        // Asked explicitly, the bytes read as a raw disk: the file's bytes,
        // and zeros up to a whole 512-byte sector, as qemu-img convert -f raw
        // gives them.
        let run = layerscope(dir, &["read", "--format", "raw", name]).ok();
        let flat = dir.join(format!("{name}.flat"));
        sh(
            dir,
            &[
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                name,
                flat.to_str().unwrap(),
            ],
        );
        assert!(
            run.stdout == std::fs::read(&flat).unwrap(),
            "{name}: read --format raw differs from qemu-img convert -f raw ({} bytes, file {})",
            run.stdout.len(),
            out.stdout.len()
        );
    }
    assert!(seen >= 15, "only {seen} corpus images");
}

/// More header fields that qemu refuses too, each patched into a copy of a
/// valid image; the message names the file and the field.
#[test]
fn header_fields_qemu_also_refuses() {
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
            "base.qcow2",
            "16M",
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
            "good.qcow2",
        ],
    );
    qemu_io(dir, "good.qcow2", &["write -P 1 0 64k"]);
    let be32 = |v: u32| v.to_be_bytes().to_vec();
    let be64 = |v: u64| v.to_be_bytes().to_vec();
    let cases: &[(&str, usize, Vec<u8>, &str)] = &[
        // The backing file name outside the first cluster, or too long.
        ("bfo.qcow2", 8, be64(0x10_0000), "backing_file_offset"),
        ("bfs.qcow2", 16, be32(5000), "backing_file_size"),
        // Legacy AES encryption, and a method nobody defined.
        ("aes.qcow2", 32, be32(1), "encrypted"),
        ("crypt9.qcow2", 32, be32(9), "crypt_method"),
        // A disk larger than any offset, or than its L1 table maps.
        ("size.qcow2", 24, be64(u64::MAX), "size"),
        ("size62.qcow2", 24, be64(1 << 62), "l1_size"),
        ("l1zero.qcow2", 36, be32(0), "l1_size"),
        // Refcounts wider than 64 bits; a v3 header shorter than v3's.
        ("rco.qcow2", 96, be32(7), "refcount_order"),
        ("hlen.qcow2", 100, be32(50), "header_length"),
    ];
    for (name, offset, bytes, field) in cases {
        patched(dir, "good.qcow2", name, *offset, bytes);
        let qemu = std::process::Command::new("qemu-img")
            .args(["info", name])
            .current_dir(dir)
            .output()
            .unwrap();
        // (qemu-img info opens an AES image: it needs no key for that.)
        if *name != "aes.qcow2" {
            assert!(
                !qemu.status.success(),
                "qemu opens {name}: the case is wrong"
            );
        }
        for cmd in ["chain", "map", "read"] {
            let l = fails(dir, &[cmd, name], name);
            assert!(l.contains(field), "{cmd} {name}: {l} does not say {field}");
        }
    }
}

/// A window that ends past the disk is bad input, not a short read.
#[test]
fn read_ranges_past_the_end() {
    if !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "d.qcow2", "1M"],
    );
    fails(dir, &["read", "d.qcow2", "--offset", "2M"], "d.qcow2");
    fails(
        dir,
        &["read", "d.qcow2", "--offset", "1048000", "--length", "1000"],
        "d.qcow2",
    );
    fails(dir, &["read", "d.qcow2", "--length", "1048577"], "d.qcow2");
}

/// Symlinks: a dangling one is a missing file; a special file with no size
/// is not an image.
#[test]
fn dangling_symlinks_and_devices() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::os::unix::fs::symlink("nowhere.qcow2", dir.join("dangling.qcow2")).unwrap();
    fails(dir, &["chain", "dangling.qcow2"], "dangling.qcow2");
    fails(dir, &["map", "/dev/null"], "/dev/null");
}
