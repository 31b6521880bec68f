//! qcow2 images with an external data file (issue 17): `data_file` found
//! like a backing file (relative to the image), raw and not, under an
//! overlay and over a backing file; compared with qemu-img map, convert,
//! info and check.

use crate::util::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io")
}

#[test]
fn data_files_read_and_map_like_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cwd = &d.path().join("images");
    std::fs::create_dir(cwd).unwrap();
    // A base and an overlay, each with its own data file, and a lone image
    // whose data file is a raw image (qemu allows no backing file with
    // that), all written with qemu-io.
    sh(
        cwd,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "data_file=base.data",
            "base.qcow2",
            "16M",
        ],
    );
    qemu_io(
        cwd,
        "base.qcow2",
        &["write -P 5 1M 128k", "write -z 4M 64k", "write -P 6 8M 2M"],
    );
    sh(
        cwd,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "data_file=top.data",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(
        cwd,
        "top.qcow2",
        &[
            "write -P 7 1056k 64k",
            "write -P 8 15M 4k",
            "write -z 8M 64k",
        ],
    );
    sh(
        cwd,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "data_file=raw.data,data_file_raw=on",
            "raw.qcow2",
            "16M",
        ],
    );
    qemu_io(cwd, "raw.qcow2", &["write -P 9 2M 64k"]);
    for image in ["base.qcow2", "top.qcow2", "raw.qcow2"] {
        let ours = layerscope(cwd, &["map", "--json", image]).ok().json();
        assert_eq!(ours, qemu_map(cwd, image), "map of {image}");
        let theirs = qemu_raw(cwd, image, &[]);
        let ours = layerscope(cwd, &["read", image]).ok().stdout;
        assert!(
            ours == theirs,
            "read of {image} differs from qemu-img convert"
        );
        // qemu opens a relative data file name relative to its working
        // directory; from elsewhere, ours also finds it beside the image.
        let path = format!("images/{image}");
        let ours = layerscope(d.path(), &["read", &path]).ok().stdout;
        assert!(ours == theirs, "read of {path} from the parent directory");
        let ours = layerscope(cwd, &["chain", "--json", image]).ok().json();
        let theirs = qemu_info_chain(cwd, image);
        for (o, t) in ours
            .as_array()
            .unwrap()
            .iter()
            .zip(theirs.as_array().unwrap())
        {
            assert_eq!(o["format-specific"], t["format-specific"], "{image}");
        }
        // qemu-img check finds nothing, and neither does ours (data
        // clusters are not refcounted in the image itself).
        sh(cwd, &["qemu-img", "check", image]);
        let r = layerscope(cwd, &["check", "--image-only", image]);
        assert_eq!(r.code, 0, "{image}: {}{}", r.text(), r.stderr);
    }
    // A missing data file is named, with the paths tried.
    std::fs::rename(cwd.join("base.data"), cwd.join("gone")).unwrap();
    let r = layerscope(d.path(), &["read", "images/top.qcow2"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("external data file") && r.stderr.contains("images/base.data"),
        "{}",
        r.stderr
    );
}
