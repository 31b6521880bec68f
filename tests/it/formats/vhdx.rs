//! VHDX: dynamic and fixed disks made by qemu-img, the real images of
//! qemu's iotests (a Hyper-V disk, a Disk2VHD disk, a dirty log),
//! differencing disks from the test-side writer, and hostile variants.
use std::path::Path;

use super::writer::{self, VhdxBlock, Writes};
use super::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io")
}

#[test]
fn dynamic_and_fixed_disks_agree_with_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for (name, opts) in [
        ("dyn.vhdx", "subformat=dynamic"),
        ("fixed.vhdx", "subformat=fixed"),
        ("small.vhdx", "subformat=dynamic,block_size=1M"),
    ] {
        sh(
            dir,
            &[
                "qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, name, "72M",
            ],
        );
        qemu_io_fmt(
            dir,
            "vhdx",
            name,
            &[
                "write -P 0x61 0x10000 0x30000",
                "write -P 0x62 0x2000000 0x200000",
                "write -z 0x100000 0x100000",
            ],
        );
        check(dir, name, None);
    }
    // The text map sees the blocks qemu's map does not: only the
    // written ones are in the file.
    let text = layerscope(dir, &["map", "small.vhdx"]).ok().text();
    assert!(text.contains("zeros"), "{text}");
    // A qcow2 overlay on a VHDX base.
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "dyn.vhdx",
            "-F",
            "vhdx",
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
    if corpus_image(dir, "iotest-dynamic-1G.vhdx").is_none() {
        return;
    }
    // Made by Hyper-V (1 GiB) and by Disk2VHD (256 MiB, identical headers).
    check_map(dir, "iotest-dynamic-1G.vhdx", None);
    check_chain(dir, "iotest-dynamic-1G.vhdx", None);
    corpus_image(dir, "test-disk2vhd.vhdx").unwrap();
    check(dir, "test-disk2vhd.vhdx", None);
    // A log that needs replaying: refused, as qemu refuses it read-only;
    // readable as it is on disk when asked.
    corpus_image(dir, "iotest-dirtylog-10G-4M.vhdx").unwrap();
    let out = std::process::Command::new("qemu-img")
        .args(["info", "iotest-dirtylog-10G-4M.vhdx"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs to be replayed"));
    let l = refused(
        dir,
        &["chain", "iotest-dirtylog-10G-4M.vhdx"],
        &["iotest-dirtylog-10G-4M.vhdx", "log", "--log-as-is"],
    );
    assert!(l.contains("not yet replayed"), "{l}");
    let text = layerscope(
        dir,
        &["chain", "--log-as-is", "iotest-dirtylog-10G-4M.vhdx"],
    )
    .ok()
    .text();
    assert!(text.contains("NOT REPLAYED"), "{text}");
    // After qemu replays the log (on a copy), both agree.
    std::fs::copy(
        dir.join("iotest-dirtylog-10G-4M.vhdx"),
        dir.join("replayed.vhdx"),
    )
    .unwrap();
    sh(
        dir,
        &["qemu-img", "check", "-q", "-r", "all", "replayed.vhdx"],
    );
    check_map(dir, "replayed.vhdx", None);
    sh(
        dir,
        &[
            "qemu-img",
            "dd",
            "-f",
            "vhdx",
            "-O",
            "raw",
            "bs=1M",
            "count=8",
            "if=replayed.vhdx",
            "of=head.qemu",
        ],
    );
    let ours = layerscope(dir, &["read", "--length", "8M", "replayed.vhdx"])
        .ok()
        .stdout;
    assert!(
        ours == std::fs::read(dir.join("head.qemu")).unwrap(),
        "replayed log: first 8 MiB"
    );
}

fn flat_of(dir: &Path, image: &str) -> Vec<u8> {
    let out = dir.join(format!("{image}.flat"));
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            image,
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

fn check_differencing(dir: &Path, child: &str, want: &[u8]) {
    let ours = layerscope(dir, &["read", child]).ok().stdout;
    assert_eq!(ours.len(), want.len(), "{child}: size");
    if let Some(at) = ours.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{child}: differs from the intended bytes at {at:#x}");
    }
}

#[test]
fn differencing_disks_follow_their_parent_locator() {
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
            "vhdx",
            "-o",
            "block_size=1M",
            "base.vhdx",
            "24M",
        ],
    );
    qemu_io_fmt(
        dir,
        "vhdx",
        "base.vhdx",
        &[
            "write -P 0x51 0 0x800000",
            "write -P 0x52 0x1000000 0x200000",
        ],
    );
    check(dir, "base.vhdx", None);
    let base = std::fs::read(dir.join("base.vhdx")).unwrap();
    let base_flat = flat_of(dir, "base.vhdx");
    // A whole block, a few sectors (partially present) and a zeroed block.
    let writes: Writes = vec![
        (0x300000, writer::pattern(0x100000, 1)),
        (0x500200, writer::pattern(0x600, 2)),
        (0x1100000, writer::pattern(0x200, 3)),
    ];
    let mut want = writer::apply(&base_flat, &writes);
    want[0x600000..0x700000].fill(0);
    std::fs::create_dir(dir.join("Snapshots")).unwrap();
    let child = writer::vhdx_differencing(
        &base,
        "..\\base.vhdx",
        "C:\\VMs\\base.vhdx",
        [0xc1; 16],
        None,
        &writes,
        &[(6, VhdxBlock::Zero)],
    );
    std::fs::write(dir.join("Snapshots/child.avhdx"), &child).unwrap();
    check_differencing(dir, "Snapshots/child.avhdx", &want);
    let text = layerscope(dir, &["chain", "Snapshots/child.avhdx"])
        .ok()
        .text();
    assert!(text.contains("VHDX differencing"), "{text}");
    assert!(
        text.contains("resolved to:   Snapshots/../base.vhdx"),
        "{text}"
    );
    // The map: the child holds the written sectors and the zeroed block.
    let map = layerscope(dir, &["map", "--json", "Snapshots/child.avhdx"])
        .ok()
        .json();
    let held: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["depth"] == 0 && e["present"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(held, 0x100000 + 0x600 + 0x200 + 0x100000);
    // A grandchild over the child, and a qcow2 overlay: diff through all.
    let writes2: Writes = vec![(0x500000, writer::pattern(0x200, 4))];
    let grand = writer::vhdx_differencing(
        &child,
        ".\\child.avhdx",
        "C:\\VMs\\Snapshots\\child.avhdx",
        [0xc2; 16],
        None,
        &writes2,
        &[],
    );
    std::fs::write(dir.join("Snapshots/grand.avhdx"), &grand).unwrap();
    check_differencing(
        dir,
        "Snapshots/grand.avhdx",
        &writer::apply(&want, &writes2),
    );
    // Stale relative path: the absolute path's file name finds it.
    let moved = writer::vhdx_differencing(
        &base,
        "..\\old\\base.vhdx",
        "E:\\gone\\base.vhdx",
        [0xc3; 16],
        None,
        &writes,
        &[],
    );
    std::fs::write(dir.join("moved.avhdx"), &moved).unwrap();
    check_differencing(dir, "moved.avhdx", &writer::apply(&base_flat, &writes));
    // A parent whose data write GUID changed after the child was made.
    let stale = writer::vhdx_differencing(
        &base,
        "base.vhdx",
        "C:\\base.vhdx",
        [0xc4; 16],
        Some([9; 16]),
        &writes,
        &[],
    );
    std::fs::write(dir.join("stale.avhdx"), &stale).unwrap();
    refused(
        dir,
        &["chain", "stale.avhdx"],
        &["stale.avhdx", "is not the parent's"],
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
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M",
            "good.vhdx",
            "8M",
        ],
    );
    qemu_io_fmt(dir, "vhdx", "good.vhdx", &["write -P 9 0 0x1000"]);
    let good = std::fs::read(dir.join("good.vhdx")).unwrap();
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    // Find the BAT and the metadata regions.
    let rt = 192 << 10;
    let (mut bat, mut meta) = (0usize, 0usize);
    for i in 0..le32(&good, rt + 8) as usize {
        let e = rt + 16 + i * 32;
        match good[e] {
            0x66 => bat = le64(&good, e + 16) as usize,
            0x06 => meta = le64(&good, e + 16) as usize,
            _ => {}
        }
    }
    assert!(bat > 0 && meta > 0);
    // BAT entry 0 past the end of the file, and over the metadata region.
    let entry = |off: u64| (off | 6).to_le_bytes();
    patched(
        dir,
        "good.vhdx",
        "eof.vhdx",
        bat as u64,
        &entry((good.len() as u64 + (1 << 20)) & !0xfffff),
    );
    refused(
        dir,
        &["chain", "eof.vhdx"],
        &[
            "eof.vhdx",
            "VHDX BAT entry",
            "past the end of the file",
            &format!("{bat:#x}"),
        ],
    );
    patched(
        dir,
        "good.vhdx",
        "over.vhdx",
        bat as u64,
        &entry(meta as u64),
    );
    refused(
        dir,
        &["chain", "over.vhdx"],
        &["over.vhdx", "VHDX BAT entry", "over the metadata region"],
    );
    // Block sizes 0 and 2^31 in the file parameters item.
    let items = u16::from_le_bytes(good[meta + 10..meta + 12].try_into().unwrap()) as usize;
    let fp = (0..items)
        .find_map(|i| {
            let e = meta + 32 + i * 32;
            (good[e..e + 4] == [0x37, 0x67, 0xa1, 0xca])
                .then(|| meta + le32(&good, e + 16) as usize)
        })
        .unwrap();
    patched(dir, "good.vhdx", "bs0.vhdx", fp as u64, &0u32.to_le_bytes());
    refused(
        dir,
        &["chain", "bs0.vhdx"],
        &["bs0.vhdx", "VHDX file parameters", "block size 0"],
    );
    patched(
        dir,
        "good.vhdx",
        "bs2g.vhdx",
        fp as u64,
        &(1u32 << 31).to_le_bytes(),
    );
    refused(
        dir,
        &["chain", "bs2g.vhdx"],
        &["bs2g.vhdx", "VHDX file parameters", "block size 2147483648"],
    );
    // A log that claims to reach past the end of the file: a header with a
    // log GUID, the log at 1 MiB, and a 1 GiB length.
    let mut h = good[64 << 10..(64 << 10) + 4096].to_vec();
    // Newer than both headers, so it is the current one.
    let seq = le64(&good, (64 << 10) + 8).max(le64(&good, (128 << 10) + 8)) + 1;
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[48..64].copy_from_slice(&[5; 16]);
    h[68..72].copy_from_slice(&(1u32 << 30).to_le_bytes());
    h[4..8].fill(0);
    let c = crc32c::crc32c(&h);
    h[4..8].copy_from_slice(&c.to_le_bytes());
    patched(dir, "good.vhdx", "log.vhdx", 64 << 10, &h);
    refused(
        dir,
        &["chain", "log.vhdx"],
        &["log.vhdx", "VHDX log", "past the end of the file"],
    );
    // A differencing disk whose parent locator names itself.
    let looped = writer::vhdx_differencing(
        &good,
        "self.avhdx",
        "C:\\self.avhdx",
        [0xd1; 16],
        Some([0xd1; 16]),
        &vec![],
        &[],
    );
    std::fs::write(dir.join("self.avhdx"), &looped).unwrap();
    refused(
        dir,
        &["chain", "self.avhdx"],
        &["backing chain loop", "self.avhdx"],
    );
}
