//! Image formats besides qcow2 (VMDK, VHD, VHDX, VDI), each compared with
//! qemu: `map --json` = `qemu-img map --output=json`, `read` = `qemu-img
//! convert -O raw`, `chain --json` = `qemu-img info --backing-chain`, and
//! the bytes each layer served in a full read = what qemu's map assigns
//! to it. Images are made in each test with qemu-img and qemu-io; the
//! formats' differencing disks qemu cannot make come from `writer`, a
//! small test-side writer that follows the published specifications.
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::*;

mod mixed;
mod over_nbd;
mod vdi;
mod vhd;
mod vhdx;
mod vmdk;
mod writer;

/// `-f FMT` for qemu and layerscope, when the format must be forced.
pub fn fmt_args(fmt: Option<&str>) -> Vec<&str> {
    fmt.map(|f| vec!["-f", f]).unwrap_or_default()
}

/// `map --json` equals `qemu-img map --output=json`.
pub fn check_map(cwd: &Path, image: &str, fmt: Option<&str>) {
    let mut ours = vec!["map", "--json"];
    ours.extend(fmt_args(fmt));
    ours.push(image);
    let ours = layerscope(cwd, &ours).ok().json();
    let mut theirs = vec!["qemu-img", "map", "--output=json"];
    theirs.extend(fmt_args(fmt));
    theirs.push(image);
    let theirs: Value = serde_json::from_slice(&sh(cwd, &theirs).stdout).unwrap();
    assert_eq!(
        ours, theirs,
        "map --json of {image} differs from qemu-img map"
    );
}

/// Compares two files chunk by chunk (they may be large and sparse).
pub fn same_files(a: &Path, b: &Path) -> Result<(), String> {
    let (la, lb) = (
        std::fs::metadata(a).unwrap().len(),
        std::fs::metadata(b).unwrap().len(),
    );
    if la != lb {
        return Err(format!("lengths {la} and {lb}"));
    }
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let mut ba = vec![0u8; 4 << 20];
    let mut bb = vec![0u8; 4 << 20];
    let mut at = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return Ok(());
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        // Slices compare with memcmp; the byte loop runs only to place a
        // difference (gigabytes of sparse images go through here).
        if ba[..n] != bb[..n] {
            let i = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y);
            return Err(format!(
                "first difference at byte {:#x}",
                at + i.unwrap_or(0) as u64
            ));
        }
        at += n as u64;
    }
}

/// `layerscope read` (to a file) equals `qemu-img convert -O raw`.
pub fn check_read(cwd: &Path, image: &str, fmt: Option<&str>) {
    let tag = image.replace('/', "_");
    let theirs = cwd.join(format!("{tag}.qemu-flat"));
    let ours = cwd.join(format!("{tag}.ours-flat"));
    let mut args = vec!["qemu-img", "convert"];
    args.extend(fmt_args(fmt));
    args.extend(["-O", "raw", image, theirs.to_str().unwrap()]);
    sh(cwd, &args);
    let mut args = vec!["read"];
    args.extend(fmt_args(fmt));
    args.push(image);
    let status = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(&args)
        .current_dir(cwd)
        .stdout(File::create(&ours).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(status.success(), "layerscope read {image} failed");
    if let Err(e) = same_files(&ours, &theirs) {
        panic!("read of {image} differs from qemu-img convert: {e}");
    }
    std::fs::remove_file(theirs).unwrap();
    std::fs::remove_file(ours).unwrap();
}

/// `chain --json` agrees with `qemu-img info --backing-chain` on every
/// fact both print, format-specific data included.
pub fn check_chain(cwd: &Path, image: &str, fmt: Option<&str>) {
    let mut ours = vec!["chain", "--json"];
    ours.extend(fmt_args(fmt));
    ours.push(image);
    let ours = layerscope(cwd, &ours).ok().json();
    let mut theirs = vec!["qemu-img", "info", "--backing-chain", "--output=json"];
    theirs.extend(fmt_args(fmt));
    theirs.push(image);
    let theirs: Value = serde_json::from_slice(&sh(cwd, &theirs).stdout).unwrap();
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
        if t["format"] != "qcow2" {
            assert_eq!(
                o.get("format-specific"),
                t.get("format-specific"),
                "{what}: format-specific"
            );
        }
        assert_eq!(o["depth"], depth, "{what}: depth");
    }
}

/// The bytes each layer served in a full read equal what qemu's map
/// assigns to that layer.
pub fn check_hits(cwd: &Path, image: &str, fmt: Option<&str>) {
    let mut args = vec!["read", "--hits"];
    args.extend(fmt_args(fmt));
    args.push(image);
    let status = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(&args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(status.status.success());
    let hits: Value = serde_json::from_slice(&status.stderr).unwrap();
    let mut map = vec!["map", "--json"];
    map.extend(fmt_args(fmt));
    map.push(image);
    let map = layerscope(cwd, &map).ok().json();
    let sum = |pred: &dyn Fn(&Value) -> bool| -> u64 {
        map.as_array()
            .unwrap()
            .iter()
            .filter(|e| pred(e))
            .map(|e| e["length"].as_u64().unwrap())
            .sum()
    };
    let layers = hits["layers"].as_array().unwrap();
    let top = layers.len() as u64 - 1;
    for l in layers {
        let depth = top - l["index"].as_u64().unwrap();
        let expected = sum(&|e: &Value| e["present"] == true && e["depth"] == depth);
        assert_eq!(
            l["bytes"], expected,
            "{image}: bytes served by layer {}",
            l["index"]
        );
    }
}

/// All four comparisons.
pub fn check(cwd: &Path, image: &str, fmt: Option<&str>) {
    check_map(cwd, image, fmt);
    check_read(cwd, image, fmt);
    check_chain(cwd, image, fmt);
    check_hits(cwd, image, fmt);
}

/// `qemu-io -f FMT -c CMD… IMAGE`, asserting every command worked.
pub fn qemu_io_fmt(cwd: &Path, fmt: &str, image: &str, cmds: &[&str]) {
    let mut args = vec!["qemu-io", "-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(image);
    let out = sh(cwd, &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("error") && !text.contains("failed"),
        "qemu-io {cmds:?}: {text}"
    );
}

/// Runs layerscope expecting exit 1 with one stderr line naming `names`,
/// within a hang guard; returns the line.
pub fn refused(cwd: &Path, args: &[&str], names: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("{args:?} hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err:?}");
    for n in names {
        assert!(
            lines[0].contains(n),
            "{args:?}: {:?} does not say {n:?}",
            lines[0]
        );
    }
    lines[0].to_owned()
}

/// A copy of `from` with `bytes` written at `offset`.
pub fn patched(dir: &Path, from: &str, to: &str, offset: u64, bytes: &[u8]) {
    let mut data = std::fs::read(dir.join(from)).unwrap();
    let at = offset as usize;
    if data.len() < at + bytes.len() {
        data.resize(at + bytes.len(), 0);
    }
    data[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(dir.join(to), data).unwrap();
}

/// Decompresses a corpus image into `dir`; `None` without the corpus.
pub fn corpus_image(dir: &Path, name: &str) -> Option<()> {
    let corpus = corpus()?;
    if !need("bzip2") {
        return None;
    }
    let src = corpus.join("qemu-iotests").join(format!("{name}.bz2"));
    let out = File::create(dir.join(name)).unwrap();
    let ok = Command::new("bzip2")
        .args(["-dc", src.to_str().unwrap()])
        .stdout(out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "bzip2 -dc {name}");
    Some(())
}
