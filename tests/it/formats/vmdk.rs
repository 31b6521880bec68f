//! VMDK: every subformat qemu makes, delta chains (with a qcow2 overlay on
//! top), the real images of qemu's iotests, and hostile variants.
use std::path::Path;

use super::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io")
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Writes a few patterns, including a grain-unaligned one and one in the
/// last grain.
fn write_patterns(dir: &Path, image: &str, size: u64, seed: u8) {
    let a = format!("write -P {} 0x10000 0x30000", 0x41 + seed);
    // streamOptimized takes whole grains only.
    let b = if image.starts_with("stream") {
        format!("write -P {} 0x120000 0x10000", 0x51 + seed)
    } else {
        format!("write -P {} 0x123400 0x1e00", 0x51 + seed)
    };
    let c = format!("write -P {} {} 0x10000", 0x61 + seed, size - 0x10000);
    qemu_io_fmt(dir, "vmdk", image, &[&a, &b, &c]);
}

#[test]
fn every_subformat_agrees_with_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let size = 64u64 << 20;
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
    ] {
        let name = format!("{sub}.vmdk");
        sh(
            dir,
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "vmdk",
                "-o",
                &format!("subformat={sub}"),
                &name,
                "64M",
            ],
        );
        write_patterns(dir, &name, size, 0);
        check(dir, &name, None);
    }
    // Zeroed grains (the zeroed_grain option and write -z), and a
    // streamOptimized image converted from a disk with data everywhere.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "zeroed_grain=on",
            "zeroed.vmdk",
            "64M",
        ],
    );
    qemu_io_fmt(
        dir,
        "vmdk",
        "zeroed.vmdk",
        &[
            "write -P 7 0 0x40000",
            "write -z 0x10000 0x20000",
            "write -z 0x200000 0x10000",
        ],
    );
    check(dir, "zeroed.vmdk", None);
    let body: Vec<u8> = (0..(6u32 << 20)).map(|i| (i / 4096 % 251) as u8).collect();
    std::fs::write(dir.join("dense.raw"), body).unwrap();
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            "dense.raw",
            "dense.vmdk",
        ],
    );
    check(dir, "dense.vmdk", None);
}

/// qemu-img preallocates every grain table of a sparse VMDK and leaves
/// them unwritten: holes of the file, which the map, the chain's "holds"
/// and reads take as all-unallocated tables without reading them. Grains
/// written in the first table, deep inside, twice in one table and in the
/// last grain put data blocks between the holes.
#[test]
fn preallocated_tables_in_holes_of_the_file() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let size = 256u64 << 30;
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vmdk", "big.vmdk", "256G"],
    );
    let far = 100u64 << 30;
    qemu_io_fmt(
        dir,
        "vmdk",
        "big.vmdk",
        &[
            "write -P 0x41 0x10000 0x20000",
            &format!("write -P 0x42 {far} 0x10000"),
            &format!("write -P 0x43 {} 0x10000", far + (1 << 20)),
            &format!("write -P 0x44 {} 0x10000", size - 0x10000),
        ],
    );
    // The premise: the tables' 16 MiB are mostly holes of the file.
    let chain = layerscope(dir, &["chain", "--json", "big.vmdk"])
        .ok()
        .json();
    let (file, on_disk) = (
        chain[0]["file-size"].as_u64().unwrap(),
        chain[0]["actual-size"].as_u64().unwrap(),
    );
    assert!(
        on_disk < (4 << 20) && file > (16 << 20),
        "the grain tables are not holes of the file ({on_disk} of {file} bytes on disk)"
    );
    check_map(dir, "big.vmdk", None);
    check_chain(dir, "big.vmdk", None);
    // "holds": the bytes qemu-img map says the image holds.
    let map: Value =
        serde_json::from_slice(&sh(dir, &["qemu-img", "map", "--output=json", "big.vmdk"]).stdout)
            .unwrap();
    let held: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(held, 5 * 0x10000);
    assert_eq!(chain[0]["allocated-bytes"], held, "allocated-bytes");
    for off in [far, far + (1 << 20), far + (2 << 20), size - 0x10000] {
        let ours = layerscope(
            dir,
            &[
                "read",
                "--offset",
                &off.to_string(),
                "--length",
                "64K",
                "big.vmdk",
            ],
        )
        .ok()
        .stdout;
        let theirs = qemu_io_read_fmt(dir, "vmdk", "big.vmdk", off, 65536);
        assert!(ours == theirs, "the grain at {off:#x} differs");
    }
}

#[test]
fn split_extents_across_the_2gib_boundary() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let name = format!("{sub}.vmdk");
        sh(
            dir,
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "vmdk",
                "-o",
                &format!("subformat={sub}"),
                &name,
                "2100M",
            ],
        );
        qemu_io_fmt(
            dir,
            "vmdk",
            &name,
            &[
                "write -P 0x71 0x7fff8000 0x10000",
                "write -P 0x72 0x80001000 0x1000",
            ],
        );
        check(dir, &name, None);
    }
}

#[test]
fn delta_chains_with_a_qcow2_overlay() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("snap")).unwrap();
    let size = 32u64 << 20;
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "32M"],
    );
    write_patterns(dir, "base.vmdk", size, 0);
    // Deltas in another directory: the parent is found relative to the
    // child, as qemu does.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "../base.vmdk",
            "-F",
            "vmdk",
            "snap/delta1.vmdk",
        ],
    );
    qemu_io_fmt(
        dir,
        "vmdk",
        "snap/delta1.vmdk",
        &[
            "write -P 0x33 0x20000 0x1000",
            "write -P 0x34 0x400000 0x20000",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "-b",
            "delta1.vmdk",
            "-F",
            "vmdk",
            "snap/delta2.vmdk",
        ],
    );
    qemu_io_fmt(
        dir,
        "vmdk",
        "snap/delta2.vmdk",
        &["write -P 0x35 0x21000 0x1000"],
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
            "delta2.vmdk",
            "-F",
            "vmdk",
            "snap/top.qcow2",
        ],
    );
    qemu_io(
        dir,
        "snap/top.qcow2",
        &["write -P 0x36 0x22000 0x1000", "write -z 0x10000 0x10000"],
    );
    for image in ["snap/delta1.vmdk", "snap/delta2.vmdk", "snap/top.qcow2"] {
        check(dir, image, None);
    }
    // The chain's text names each parent and says the content IDs agree.
    let text = layerscope(dir, &["chain", "snap/top.qcow2"]).ok().text();
    assert!(text.contains("resolved to:   snap/../base.vmdk"), "{text}");
    assert_eq!(text.matches("(matches the parent)").count(), 2, "{text}");
}

#[test]
fn a_parent_whose_content_id_changed() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "4M"],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            "top.vmdk",
        ],
    );
    // Writing to the base gives it a new CID: qemu no longer reads
    // through it.
    qemu_io_fmt(dir, "vmdk", "base.vmdk", &["write -P 1 0 512"]);
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw", "top.vmdk", "t.raw"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "qemu reads through a changed parent");
    let text = layerscope(dir, &["chain", "top.vmdk"]).ok().text();
    assert!(
        text.contains("qemu refuses to read through this parent"),
        "{text}"
    );
    check_map(dir, "top.vmdk", None);
}

#[test]
fn the_qemu_iotests_images() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    if corpus_image(dir, "iotest-version3.vmdk").is_none() {
        return;
    }
    // A VMware streamOptimized image with its grain directory in the
    // footer: 16 GiB, data in the first 64 MiB and one grain per 320 MiB.
    check_map(dir, "iotest-version3.vmdk", None);
    check_chain(dir, "iotest-version3.vmdk", None);
    sh(
        dir,
        &[
            "qemu-img",
            "dd",
            "-f",
            "vmdk",
            "-O",
            "raw",
            "bs=1M",
            "count=80",
            "if=iotest-version3.vmdk",
            "of=head.qemu",
        ],
    );
    let ours = layerscope(dir, &["read", "--length", "80M", "iotest-version3.vmdk"])
        .ok()
        .stdout;
    assert!(
        ours == std::fs::read(dir.join("head.qemu")).unwrap(),
        "first 80 MiB differ"
    );
    let far = layerscope(
        dir,
        &[
            "read",
            "--offset",
            "335806464",
            "--length",
            "64K",
            "iotest-version3.vmdk",
        ],
    )
    .ok()
    .stdout;
    let theirs = qemu_io_read_fmt(dir, "vmdk", "iotest-version3.vmdk", 335_806_464, 65536);
    assert!(far == theirs, "the grain at 320 MiB differs");
    // An AFL-found header qemu refuses: refused here too.
    corpus_image(dir, "afl9.vmdk").unwrap();
    let out = std::process::Command::new("qemu-img")
        .args(["info", "afl9.vmdk"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    refused(
        dir,
        &["map", "afl9.vmdk"],
        &["afl9.vmdk", "L1 size too big"],
    );
}

/// `qemu-io -f FMT -r -c "read -v"` bytes.
pub fn qemu_io_read_fmt(cwd: &Path, fmt: &str, image: &str, off: u64, len: u64) -> Vec<u8> {
    let out = sh(
        cwd,
        &[
            "qemu-io",
            "-f",
            fmt,
            "-r",
            "-c",
            &format!("read -v {off} {len}"),
            image,
        ],
    );
    let mut bytes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((addr, rest)) = line.split_once(":  ") else {
            continue;
        };
        if u64::from_str_radix(addr.trim(), 16).is_err() {
            continue;
        }
        for tok in rest.split_whitespace().take(16) {
            match u8::from_str_radix(tok, 16) {
                Ok(b) if tok.len() == 2 => bytes.push(b),
                _ => break,
            }
        }
    }
    assert_eq!(bytes.len() as u64, len);
    bytes
}

/// Rewrites the descriptor embedded in a monolithic sparse file.
fn set_embedded_descriptor(dir: &Path, file: &str, edit: impl Fn(&str) -> String) {
    let mut data = std::fs::read(dir.join(file)).unwrap();
    let at = le64(&data, 28) as usize * 512;
    let len = le64(&data, 36) as usize * 512;
    let text = String::from_utf8_lossy(&data[at..at + len])
        .trim_end_matches('\0')
        .to_owned();
    let new = edit(&text);
    assert!(new.len() < len);
    data[at..at + len].fill(0);
    data[at..at + new.len()].copy_from_slice(new.as_bytes());
    std::fs::write(dir.join(file), data).unwrap();
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
        &["qemu-img", "create", "-q", "-f", "vmdk", "good.vmdk", "8M"],
    );
    qemu_io_fmt(dir, "vmdk", "good.vmdk", &["write -P 9 0 0x20000"]);
    let good = std::fs::read(dir.join("good.vmdk")).unwrap();
    let gd = le64(&good, 56) as usize * 512;
    let overhead = le64(&good, 64) * 512;
    let gt = le32(&good, gd) as u64 * 512;
    let file_len = good.len() as u64;

    // A grain directory entry past the end of the file.
    patched(
        dir,
        "good.vmdk",
        "gd-eof.vmdk",
        gd as u64,
        &((file_len / 512 + 10) as u32).to_le_bytes(),
    );
    refused(
        dir,
        &["map", "gd-eof.vmdk"],
        &[
            "gd-eof.vmdk",
            "grain directory entry",
            "passes the end of the file",
        ],
    );
    // A grain table entry pointing into the metadata (at the grain
    // directory itself), and one past the end of the file.
    patched(
        dir,
        "good.vmdk",
        "gt-meta.vmdk",
        gt,
        &((gd / 512) as u32).to_le_bytes(),
    );
    let l = refused(
        dir,
        &["read", "gt-meta.vmdk"],
        &["gt-meta.vmdk", "grain table entry", "into the metadata"],
    );
    assert!(l.contains(&format!("{gt:#x}")), "{l}");
    patched(
        dir,
        "good.vmdk",
        "gt-eof.vmdk",
        gt + 4,
        &u32::MAX.to_le_bytes(),
    );
    refused(
        dir,
        &["map", "gt-eof.vmdk"],
        &[
            "gt-eof.vmdk",
            "grain table entry",
            "past the end of the file",
        ],
    );
    // Grain sizes 0 and 2^31 sectors; grain tables of 0 and 100000 entries.
    patched(dir, "good.vmdk", "grain0.vmdk", 20, &0u64.to_le_bytes());
    refused(
        dir,
        &["chain", "grain0.vmdk"],
        &["grain0.vmdk", "VMDK sparse header", "invalid"],
    );
    patched(
        dir,
        "good.vmdk",
        "grain2g.vmdk",
        20,
        &(1u64 << 31).to_le_bytes(),
    );
    refused(
        dir,
        &["chain", "grain2g.vmdk"],
        &["grain2g.vmdk", "VMDK sparse header", "1 GiB"],
    );
    patched(dir, "good.vmdk", "gt0.vmdk", 44, &0u32.to_le_bytes());
    refused(
        dir,
        &["chain", "gt0.vmdk"],
        &["gt0.vmdk", "VMDK sparse header"],
    );
    patched(
        dir,
        "good.vmdk",
        "gtbig.vmdk",
        44,
        &100_000u32.to_le_bytes(),
    );
    refused(
        dir,
        &["chain", "gtbig.vmdk"],
        &["gtbig.vmdk", "L2 table size too big"],
    );
    // The first grain claimed past the end of the file (truncated).
    patched(
        dir,
        "good.vmdk",
        "short.vmdk",
        64,
        &(file_len / 512 + 1).to_le_bytes(),
    );
    refused(dir, &["chain", "short.vmdk"], &["short.vmdk", "truncated"]);
    let _ = overhead;

    // A descriptor listing 10,000 extents.
    let mut desc = String::from("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n");
    for i in 0..10_000 {
        desc.push_str(&format!("RW 2048 FLAT \"x{i}.raw\" 0\n"));
    }
    std::fs::write(dir.join("many.vmdk"), desc).unwrap();
    refused(
        dir,
        &["chain", "many.vmdk"],
        &["many.vmdk", "VMDK descriptor", "more than 1024 extents"],
    );
    // An extent file that is not there.
    let lost = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"gone-flat.vmdk\" 0\n";
    std::fs::write(dir.join("lost.vmdk"), lost).unwrap();
    let line = format!("{:#x}", lost.find("RW ").unwrap());
    refused(
        dir,
        &["chain", "lost.vmdk"],
        &["lost.vmdk", "gone-flat.vmdk", &line],
    );

    // A parent loop across formats: a VMDK delta names the qcow2 overlay
    // above it as its parent.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "good.vmdk",
            "-F",
            "vmdk",
            "mid.vmdk",
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
            "mid.vmdk",
            "-F",
            "vmdk",
            "loop.qcow2",
        ],
    );
    set_embedded_descriptor(dir, "mid.vmdk", |t| {
        t.replace(
            "parentFileNameHint=\"good.vmdk\"",
            "parentFileNameHint=\"loop.qcow2\"",
        )
    });
    refused(
        dir,
        &["chain", "loop.qcow2"],
        &["backing chain loop", "loop.qcow2"],
    );
}

#[test]
fn hostile_stream_grains() {
    if !tools() {
        return;
    }
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("src.raw"), body).unwrap();
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            "src.raw",
            "s.vmdk",
        ],
    );
    check_read(dir, "s.vmdk", None);
    let good = std::fs::read(dir.join("s.vmdk")).unwrap();
    let gd = le64(&good, 56) as usize * 512;
    let gt = le32(&good, gd) as usize * 512;
    // A grain whose zlib stream inflates to twice the grain size, appended
    // at the end of the file; the first grain table entry points at it.
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&vec![0x5a; 128 << 10]).unwrap();
    let z = z.finish().unwrap();
    let mut evil = good.clone();
    let at = evil.len().div_ceil(512) * 512;
    evil.resize(at, 0);
    evil.extend_from_slice(&0u64.to_le_bytes());
    evil.extend_from_slice(&(z.len() as u32).to_le_bytes());
    evil.extend_from_slice(&z);
    evil.resize(evil.len().div_ceil(512) * 512, 0);
    evil[gt..gt + 4].copy_from_slice(&((at / 512) as u32).to_le_bytes());
    std::fs::write(dir.join("inflate.vmdk"), &evil).unwrap();
    let l = refused(
        dir,
        &["read", "inflate.vmdk"],
        &[
            "inflate.vmdk",
            "VMDK compressed grain",
            "inflates past the grain size",
        ],
    );
    assert!(l.contains(&format!("{at:#x}")), "{l}");
    // A marker claiming 4 GiB of compressed bytes.
    let first = le32(&good, gt) as usize * 512;
    patched(
        dir,
        "s.vmdk",
        "marker.vmdk",
        first as u64 + 8,
        &u32::MAX.to_le_bytes(),
    );
    refused(
        dir,
        &["read", "marker.vmdk"],
        &["marker.vmdk", "grain marker says"],
    );
}
