//! VDI: dynamic and static images made by qemu-img, differencing images
//! (linked by UUID) from the test-side writer, and hostile variants.
use super::writer::{self, Writes};
use super::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io")
}

#[test]
fn dynamic_and_static_images_agree_with_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for (name, opts) in [("dyn.vdi", "static=off"), ("static.vdi", "static=on")] {
        // Not a whole number of 1 MiB blocks.
        sh(
            dir,
            &[
                "qemu-img", "create", "-q", "-f", "vdi", "-o", opts, name, "40000000",
            ],
        );
        qemu_io_fmt(
            dir,
            "vdi",
            name,
            &[
                "write -P 0x61 0x10000 0x30000",
                "write -P 0x62 0x2000000 0x200000",
                "write -P 0x63 39999488 512",
            ],
        );
        check(dir, name, None);
    }
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "dyn.vdi",
            "-F",
            "vdi",
            "top.qcow2",
        ],
    );
    qemu_io(dir, "top.qcow2", &["write -P 0x64 0x20000 0x1000"]);
    check(dir, "top.qcow2", None);
}

#[test]
fn differencing_images_are_found_by_uuid() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vdi", "base.vdi", "16M"],
    );
    qemu_io_fmt(
        dir,
        "vdi",
        "base.vdi",
        &["write -P 0x41 0 0x300000", "write -P 0x42 0x900000 0x1000"],
    );
    // Decoys beside it: another VDI, and files that are not VDIs.
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "vdi", "other.vdi", "16M"],
    );
    std::fs::write(dir.join("notes.txt"), b"not an image").unwrap();
    let base = std::fs::read(dir.join("base.vdi")).unwrap();
    let out = dir.join("base.flat");
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            "base.vdi",
            out.to_str().unwrap(),
        ],
    );
    let base_flat = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let writes: Writes = vec![
        (0x100200, writer::pattern(0x400, 1)),
        (0xa00000, writer::pattern(0x200, 2)),
    ];
    // VirtualBox keeps differencing images in Snapshots/ below the base.
    std::fs::create_dir(dir.join("Snapshots")).unwrap();
    let child = writer::vdi_differencing(&base, &base_flat, [0xa1; 16], &writes, &[2]);
    std::fs::write(dir.join("Snapshots/{a1}.vdi"), &child).unwrap();
    let mut want = writer::apply(&base_flat, &writes);
    want[0x200000..0x300000].fill(0);
    let ours = layerscope(dir, &["read", "Snapshots/{a1}.vdi"]).ok().stdout;
    assert!(ours == want, "child read differs from the intended bytes");
    let text = layerscope(dir, &["chain", "Snapshots/{a1}.vdi"])
        .ok()
        .text();
    assert!(
        text.contains("resolved to:   Snapshots/../base.vdi"),
        "{text}"
    );
    // Beside its parent, a grandchild.
    let writes2: Writes = vec![(0x100000, writer::pattern(0x200, 3))];
    let grand = writer::vdi_differencing(&child, &want, [0xa2; 16], &writes2, &[]);
    std::fs::write(dir.join("Snapshots/{a2}.vdi"), &grand).unwrap();
    let ours = layerscope(dir, &["read", "Snapshots/{a2}.vdi"]).ok().stdout;
    assert!(ours == writer::apply(&want, &writes2), "grandchild read");
    let chain = layerscope(dir, &["chain", "--json", "Snapshots/{a2}.vdi"])
        .ok()
        .json();
    assert_eq!(chain.as_array().unwrap().len(), 3, "{chain}");
    // No parent anywhere near: one clear line.
    // (Two levels down: the directory above is searched too.)
    std::fs::create_dir_all(dir.join("alone/deeper")).unwrap();
    std::fs::write(dir.join("alone/deeper/orphan.vdi"), &child).unwrap();
    refused(
        dir,
        &["chain", "alone/deeper/orphan.vdi"],
        &["alone/deeper/orphan.vdi", "no image with identity"],
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
        &["qemu-img", "create", "-q", "-f", "vdi", "good.vdi", "8M"],
    );
    qemu_io_fmt(dir, "vdi", "good.vdi", &["write -P 9 0 0x1000"]);
    let good = std::fs::read(dir.join("good.vdi")).unwrap();
    let bmap = u32::from_le_bytes(good[340..344].try_into().unwrap()) as u64;
    patched(dir, "good.vdi", "eof.vdi", bmap, &1000u32.to_le_bytes());
    refused(
        dir,
        &["map", "eof.vdi"],
        &[
            "eof.vdi",
            "VDI block map entry",
            "past the end of the file",
            &format!("{bmap:#x}"),
        ],
    );
    patched(dir, "good.vdi", "bs0.vdi", 376, &0u32.to_le_bytes());
    refused(dir, &["chain", "bs0.vdi"], &["bs0.vdi", "block size 0"]);
    patched(
        dir,
        "good.vdi",
        "bs2g.vdi",
        376,
        &(1u32 << 31).to_le_bytes(),
    );
    refused(
        dir,
        &["chain", "bs2g.vdi"],
        &["bs2g.vdi", "block size 2147483648"],
    );
    patched(dir, "good.vdi", "blocks.vdi", 384, &u32::MAX.to_le_bytes());
    refused(dir, &["chain", "blocks.vdi"], &["blocks.vdi", "cBlocks"]);
    patched(
        dir,
        "good.vdi",
        "size.vdi",
        368,
        &(1u64 << 40).to_le_bytes(),
    );
    refused(dir, &["chain", "size.vdi"], &["size.vdi", "cbDisk"]);
}
