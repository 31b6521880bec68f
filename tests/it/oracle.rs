//! `qcow2-rs` as a second, independent oracle beside qemu, on clean images
//! only (on damaged ones it panics; that is why layerscope has its own
//! reader). It resolves relative backing paths against the current
//! directory, so these chains use absolute ones.
use std::path::Path;

use qcow2_rs::dev::Qcow2DevParams;
use qcow2_rs::helpers::Qcow2IoBuf;
use qcow2_rs::utils::qcow2_setup_dev_sync;

use crate::util::*;

/// The whole virtual disk as qcow2-rs reads it.
fn read_with_qcow2_rs(path: &Path) -> Vec<u8> {
    let params = Qcow2DevParams::new(9, None, None, true, false);
    let dev = qcow2_setup_dev_sync(path, &params).expect("qcow2-rs opens the image");
    futures::executor::block_on(dev.qcow2_prep_io()).expect("qcow2-rs prepares");
    let size = dev.info.virtual_size();
    let mut out = Vec::with_capacity(size as usize);
    let chunk = 64 << 10;
    let mut off = 0u64;
    while off < size {
        let n = chunk.min((size - off) as usize);
        let mut buf = Qcow2IoBuf::<u8>::new(n);
        let got = futures::executor::block_on(dev.read_at(&mut buf, off)).expect("qcow2-rs reads");
        assert_eq!(got, n);
        out.extend_from_slice(&buf[..n]);
        off += n as u64;
    }
    out
}

#[test]
fn layerscope_and_qcow2_rs_read_the_same_bytes() {
    if !need("qemu-img") || !need("qemu-io") || !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "16M", 30);
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
    let base = dir.join("base.qcow2");
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(
        dir,
        "top.qcow2",
        &[
            "write -P 0x61 0x10000 0x30000",
            "write -P 0x62 0x7ff000 0x2000",
            "write -z 0x100000 0x10000",
        ],
    );
    for image in ["base.qcow2", "top.qcow2"] {
        let theirs = read_with_qcow2_rs(&dir.join(image));
        let ours = layerscope(dir, &["read", image]).ok().stdout;
        assert_eq!(ours.len(), theirs.len(), "{image}: size");
        if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            panic!("{image}: layerscope and qcow2-rs differ at byte {at:#x}");
        }
    }
}
