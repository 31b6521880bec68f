//! `volumes` and `--volume` against the tools that make and read partition
//! tables and volumes: disks partitioned with `sfdisk`, filesystems made by
//! their own mkfs at partition offsets, converted to qcow2 with a thin
//! overlay; `volumes --json` equals `sfdisk --json` (start, size, type,
//! name, UUID) and `blkid -p -O OFFSET` (type, version, label, UUID) for
//! every partition, and its per-layer byte counts equal `qemu-img map`.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::util::*;

/// Partitions `image` with an sfdisk script.
pub fn sfdisk(dir: &Path, image: &str, script: &str) {
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", image])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk {image}");
}

/// Makes an empty (sparse) file of `size` bytes.
pub fn sparse(dir: &Path, name: &str, size: u64) {
    std::fs::File::create(dir.join(name))
        .unwrap()
        .set_len(size)
        .unwrap();
}

/// Copies file `from` into `to` at byte `offset`, keeping holes.
pub fn put(dir: &Path, from: &str, to: &str, offset: u64) {
    sh(
        dir,
        &[
            "dd",
            &format!("if={from}"),
            &format!("of={to}"),
            "bs=1M",
            &format!("seek={offset}"),
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

/// `blkid -p -O OFFSET -o export IMAGE`, as a map (empty: nothing found).
fn blkid(dir: &Path, image: &str, offset: u64) -> BTreeMap<String, String> {
    let out = std::process::Command::new("blkid")
        .args(["-p", "-O", &offset.to_string(), "-o", "export", image])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("\\ ", " ")))
        .collect()
}

fn sfdisk_json(dir: &Path, image: &str) -> (Value, String) {
    let out = std::process::Command::new("sfdisk")
        .args(["--json", image])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "sfdisk --json {image}");
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn volume<'a>(ours: &'a Value, name: &str) -> &'a Value {
    ours["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {ours:#}"))
}

/// Our table equals sfdisk's, entry for entry; each partition's content
/// equals blkid's probe at its offset (on `raw`, the same disk as a raw
/// file). Returns how many partitions had content.
fn check_against_tools(dir: &Path, raw: &str, ours: &Value) -> usize {
    let (theirs, _) = sfdisk_json(dir, raw);
    let pt = &theirs["partitiontable"];
    let table = &ours["table"];
    assert_eq!(table["label"], pt["label"]);
    assert_eq!(
        table["id"].as_str().unwrap().to_ascii_uppercase(),
        pt["id"].as_str().unwrap().to_ascii_uppercase()
    );
    let sector = pt["sectorsize"].as_u64().unwrap();
    let theirs = pt["partitions"].as_array().unwrap();
    let ours_parts = table["partitions"].as_array().unwrap();
    assert_eq!(ours_parts.len(), theirs.len(), "{ours_parts:#?}");
    let mut with_content = 0;
    for (o, t) in ours_parts.iter().zip(theirs) {
        let node = t["node"].as_str().unwrap();
        let number: u64 = node.trim_start_matches(raw).parse().unwrap();
        assert_eq!(o["number"], number);
        assert_eq!(o["first_sector"], t["start"], "{node}");
        assert_eq!(o["sectors"], t["size"], "{node}");
        assert_eq!(
            o["start"].as_u64().unwrap(),
            t["start"].as_u64().unwrap() * sector
        );
        assert_eq!(o["kind"], t["type"], "{node}");
        assert_eq!(
            o["name"],
            t.get("name").cloned().unwrap_or(Value::from("")),
            "{node}"
        );
        assert_eq!(
            o["uuid"],
            t.get("uuid").cloned().unwrap_or(Value::Null),
            "{node}"
        );
        assert_eq!(
            o["bootable"],
            t.get("bootable").cloned().unwrap_or(Value::Bool(false))
        );
        let v = volume(ours, &format!("p{number}"));
        if t["type"] == "5" || t["type"] == "f" || t["type"] == "85" {
            assert!(v["unsupported"].as_str().unwrap().contains("extended"));
            continue;
        }
        let probe = blkid(dir, raw, o["start"].as_u64().unwrap());
        let c = &v["content"];
        assert_eq!(
            c["type"].as_str(),
            probe.get("TYPE").map(String::as_str),
            "{node}: {probe:?}"
        );
        assert_eq!(
            c["uuid"].as_str(),
            probe.get("UUID").map(String::as_str),
            "{node}: {probe:?}"
        );
        assert_eq!(
            c["label"].as_str(),
            probe.get("LABEL").map(String::as_str),
            "{node}: {probe:?}"
        );
        assert_eq!(
            c["usage"].as_str(),
            probe.get("USAGE").map(String::as_str),
            "{node}: {probe:?}"
        );
        if let Some(ver) = probe.get("VERSION") {
            assert_eq!(
                c["version"].as_str(),
                Some(ver.as_str()),
                "{node}: {probe:?}"
            );
        }
        with_content += usize::from(probe.contains_key("TYPE"));
    }
    with_content
}

/// Each volume's bytes per layer equal what `qemu-img map` says of the
/// ranges its partition covers.
fn check_layers(dir: &Path, image: &str, ours: &Value) {
    let map = qemu_map(dir, image);
    let top = ours["layers"].as_array().unwrap().len() as u64 - 1;
    for v in ours["volumes"].as_array().unwrap() {
        let Some(start) = v["start"].as_u64() else {
            continue;
        };
        if v["unsupported"].is_string() {
            continue;
        }
        let end = start + v["len"].as_u64().unwrap();
        let mut want: BTreeMap<Option<u64>, u64> = BTreeMap::new();
        for e in map.as_array().unwrap() {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            let (a, b) = (s.max(start), (s + l).min(end));
            if a < b {
                let layer = e["present"]
                    .as_bool()
                    .unwrap()
                    .then(|| top - e["depth"].as_u64().unwrap());
                *want.entry(layer).or_default() += b - a;
            }
        }
        let got: BTreeMap<Option<u64>, u64> = v["layers"]["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["layer"].as_u64(), s["bytes"].as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "layers of {}", v["name"]);
    }
}

#[test]
fn gpt_disk_of_many_kinds_equals_sfdisk_and_blkid() {
    let tools = [
        "sfdisk",
        "blkid",
        "qemu-img",
        "qemu-io",
        "mke2fs",
        "mkfs.vfat",
        "mkswap",
        "mkfs.xfs",
        "mkfs.btrfs",
        "cryptsetup",
        "mkntfs",
        "dd",
    ];
    if !tools.iter().all(|t| need(t)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    const M: u64 = 1 << 20;
    // (sectors from, size in MiB, type, name)
    let parts: [(u64, u64, &str, &str); 10] = [
        (2048, 1, "21686148-6449-6E6F-744E-656564454649", "bios boot"),
        (
            4096,
            40,
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "EFI system",
        ),
        (86016, 32, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "root fs"),
        (151552, 8, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "swap"),
        (
            167936,
            300,
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "xfs data",
        ),
        (782336, 120, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "btrfs"),
        (1028096, 20, "CA7D7CCB-63ED-4C53-861C-1742536059CC", "luks2"),
        (
            1069056,
            8,
            "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            "windows",
        ),
        (1085440, 4, "CA7D7CCB-63ED-4C53-861C-1742536059CC", "luks1"),
        (1093632, 2, "8DA63339-0007-60C0-C436-083AC8230908", "empty"),
    ];
    sparse(dir, "gpt.raw", 540 * M);
    let mut script = String::from("label: gpt\n");
    for (start, mib, kind, name) in parts {
        script.push_str(&format!(
            "start={start}, size={}, type={kind}, name=\"{name}\"\n",
            mib * 2048
        ));
    }
    sfdisk(dir, "gpt.raw", &script);
    let at = |i: usize| parts[i].0 * 512;
    let kib = |i: usize| (parts[i].1 * 1024).to_string();
    sh(
        dir,
        &[
            "mkfs.vfat",
            "-F",
            "32",
            "-n",
            "ESP",
            "--offset",
            &parts[1].0.to_string(),
            "gpt.raw",
            &kib(1),
        ],
    );
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "root",
            "-E",
            &format!("offset={}", at(2)),
            "gpt.raw",
            &format!("{}k", kib(2)),
        ],
    );
    let made = |name: &str, mib: u64| sparse(dir, name, mib * M);
    made("swap.img", 8);
    sh(dir, &["mkswap", "-q", "-L", "swappy", "swap.img"]);
    made("xfs.img", 300);
    sh(dir, &["mkfs.xfs", "-q", "-L", "xdata", "xfs.img"]);
    made("btrfs.img", 120);
    sh(dir, &["mkfs.btrfs", "-q", "-L", "bt", "btrfs.img"]);
    std::fs::write(dir.join("key"), b"secret").unwrap();
    for (img, mib, kind, label) in [
        ("luks2.img", 20, "luks2", Some("vault")),
        ("luks1.img", 4, "luks1", None),
    ] {
        made(img, mib);
        let mut args = vec![
            "cryptsetup",
            "luksFormat",
            "-q",
            "--type",
            kind,
            "--key-file",
            "key",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
        ];
        if let Some(l) = label {
            args.extend(["--label", l]);
        }
        args.push(img);
        sh(dir, &args);
    }
    made("ntfs.img", 8);
    sh(
        dir,
        &["mkntfs", "-q", "-F", "-f", "-L", "winvol", "ntfs.img"],
    );
    for (i, img) in [
        (3, "swap.img"),
        (4, "xfs.img"),
        (5, "btrfs.img"),
        (6, "luks2.img"),
        (7, "ntfs.img"),
        (8, "luks1.img"),
    ] {
        put(dir, img, "gpt.raw", at(i));
    }
    // A qcow2 base and a thin overlay that writes into the BIOS boot
    // partition (so its bytes come from two layers).
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "gpt.raw",
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
            "top.qcow2",
        ],
    );
    qemu_io(
        dir,
        "top.qcow2",
        &[&format!("write -P 0xab {} 64k", at(0) + 128 * 1024)],
    );

    let ours = layerscope(dir, &["volumes", "--json", "top.qcow2"])
        .ok()
        .json();
    let found = check_against_tools(dir, "gpt.raw", &ours);
    assert_eq!(found, 8, "every made volume was probed by blkid too");
    check_layers(dir, "top.qcow2", &ours);
    let bios = volume(&ours, "p1");
    assert_eq!(bios["layers"]["shares"][0]["layer"], 1);
    assert_eq!(bios["layers"]["shares"][0]["bytes"], 64 * 1024);
    let g = &ours["table"]["gpt"];
    assert_eq!(g["used"], "primary");
    assert_eq!(
        g["primary"]["header_crc"]["stored"],
        g["primary"]["header_crc"]["computed"]
    );
    assert_eq!(
        ours["problems"].as_array().unwrap().len(),
        0,
        "{:#}",
        ours["problems"]
    );
    // The text form names every partition and its content.
    let text = layerscope(dir, &["volumes", "top.qcow2"]).ok().text();
    for want in [
        "EFI System",
        "vfat (FAT32) label \"ESP\"",
        "crypto_LUKS (2) label \"vault\"",
        "using the primary header",
        "btrfs",
        "ntfs",
        "swap",
        "xfs",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // What layerscope does not decode is named all the same.
    assert_eq!(volume(&ours, "p3")["decoded"], true);
    assert_eq!(volume(&ours, "p6")["decoded"], false);
    let btrfs = text.lines().find(|l| l.contains("btrfs")).unwrap();
    assert!(
        btrfs.contains("label \"bt\"") && btrfs.ends_with("[not decoded]"),
        "{btrfs}"
    );
    // Two volumes hold a filesystem layerscope reads (p3's ext4, p5's
    // XFS; the ESP is passed over, the others are not filesystems
    // layerscope reads): unnamed, the choice is refused naming both;
    // --volume and --partition name the same one.
    let unnamed = layerscope(dir, &["ls", "-l", "top.qcow2"]);
    assert_eq!(unnamed.code, 1);
    assert!(
        unnamed.stderr.contains("several volumes hold a filesystem")
            && unnamed.stderr.contains("p3 (ext4")
            && unnamed.stderr.contains("p5 (xfs"),
        "{}",
        unnamed.stderr
    );
    let plain = layerscope(dir, &["ls", "-l", "top.qcow2", "--volume", "p3"])
        .ok()
        .text();
    assert!(plain.contains("lost+found"), "{plain}");
    for args in [["--volume", "p3"], ["--partition", "3"]] {
        let named = layerscope(dir, &["ls", "-l", "top.qcow2", args[0], args[1]])
            .ok()
            .text();
        assert_eq!(named, plain);
    }
    let info = layerscope(dir, &["info", "--json", "top.qcow2", "--volume", "p3"])
        .ok()
        .json();
    assert_eq!(info["volume"], "p3");
    let xfs = layerscope(dir, &["info", "--json", "top.qcow2", "--volume", "p5"])
        .ok()
        .json();
    assert_eq!(
        (&xfs["volume"], &xfs["filesystem"]),
        (&"p5".into(), &"xfs".into())
    );
    // render shows the chosen volume's filesystem tree (the whole disk
    // has none).
    let frame = layerscope(
        dir,
        &["render", "top.qcow2", "--volume", "p3", "--size", "120x40"],
    )
    .ok()
    .text();
    assert!(frame.contains("▸ /"), "{frame}");
    // Without --volume the TUI opens straight into the first volume
    // holding a filesystem (where the CLI would ask which), and says so.
    let whole = layerscope(dir, &["render", "top.qcow2", "--size", "120x40"])
        .ok()
        .text();
    assert!(
        whole.contains("▸ /") && whole.contains("· p3 ext4"),
        "{whole}"
    );
    // Naming a volume that holds no filesystem layerscope reads (p6's
    // btrfs) says which volume; p5's XFS is read.
    let run = layerscope(dir, &["ls", "top.qcow2", "--volume", "p6"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("volume p6"), "{}", run.stderr);
    layerscope(dir, &["ls", "top.qcow2", "--volume", "p5"]).ok();
    let run = layerscope(dir, &["ls", "top.qcow2", "--volume", "p42"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no volume \"p42\"") && run.stderr.contains("p3 (ext4, 32 MiB)"),
        "{}",
        run.stderr
    );
}

#[test]
fn mbr_with_logical_partitions_equals_sfdisk_and_blkid() {
    if ![
        "sfdisk",
        "blkid",
        "qemu-img",
        "mke2fs",
        "mkfs.vfat",
        "mkswap",
        "dd",
    ]
    .iter()
    .all(|t| need(t))
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sparse(dir, "mbr.raw", 64 << 20);
    sfdisk(
        dir,
        "mbr.raw",
        "label: dos\nlabel-id: 0x1234abcd\n\
         start=2048, size=8192, type=1, bootable\n\
         start=10240, size=16384, type=8e\n\
         start=26624, size=100352, type=5\n\
         start=28672, size=16384, type=83\n\
         start=47104, size=8192, type=82\n\
         start=57344, size=40960, type=e\n",
    );
    sh(
        dir,
        &[
            "mkfs.vfat",
            "-F",
            "12",
            "-n",
            "SMALL",
            "--offset",
            "2048",
            "mbr.raw",
            "4096",
        ],
    );
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext2",
            "-L",
            "logical",
            "-E",
            &format!("offset={}", 28672 * 512),
            "mbr.raw",
            "8M",
        ],
    );
    sparse(dir, "swap.img", 4 << 20);
    sh(dir, &["mkswap", "-q", "swap.img"]);
    put(dir, "swap.img", "mbr.raw", 47104 * 512);
    sh(
        dir,
        &[
            "mkfs.vfat",
            "-F",
            "16",
            "-n",
            "MIDDLE",
            "--offset",
            "57344",
            "mbr.raw",
            "20480",
        ],
    );
    sh(
        dir,
        &["qemu-img", "convert", "-O", "qcow2", "mbr.raw", "mbr.qcow2"],
    );
    let ours = layerscope(dir, &["volumes", "--json", "mbr.qcow2"])
        .ok()
        .json();
    assert_eq!(check_against_tools(dir, "mbr.raw", &ours), 4);
    check_layers(dir, "mbr.qcow2", &ours);
    assert_eq!(volume(&ours, "p5")["role"]["partition"]["logical"], true);
    assert_eq!(
        volume(&ours, "p1")["role"]["partition"]["type_name"],
        "FAT12"
    );
    assert_eq!(volume(&ours, "disk")["role"], "disk");
    // The ext filesystem in logical partition 5, by its bare number.
    let info = layerscope(dir, &["info", "--json", "--partition", "5", "mbr.qcow2"])
        .ok()
        .json();
    assert_eq!(info["volume"], "p5");
}

/// A damaged primary GPT header (its CRC, then its entry array's) gives
/// way to the backup, with a warning, as sfdisk does; with both damaged no
/// partition is read and commands say why.
#[test]
fn damaged_primary_gpt_falls_back_to_the_backup() {
    if !["sfdisk", "mke2fs", "qemu-img"].iter().all(|t| need(t)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sparse(dir, "d.raw", 32 << 20);
    sfdisk(
        dir,
        "d.raw",
        "label: gpt\nstart=2048, size=16384, name=\"data\"\nstart=18432, name=\"rest\"\n",
    );
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-E",
            "offset=1048576",
            "d.raw",
            "8M",
        ],
    );
    let disk = std::fs::read(dir.join("d.raw")).unwrap();
    let good = layerscope(dir, &["volumes", "--json", "d.raw"]).ok().json();
    let last = disk.len() / 512 - 1;
    // (what is damaged, byte flipped)
    for (what, at) in [("header CRC", 512 + 40), ("entry array CRC", 1024 + 56)] {
        let mut bad = disk.clone();
        bad[at] ^= 0x01;
        std::fs::write(dir.join("bad.raw"), &bad).unwrap();
        let (theirs, warning) = sfdisk_json(dir, "bad.raw");
        assert!(
            warning.contains("primary GPT table is corrupt"),
            "{warning}"
        );
        let ours = layerscope(dir, &["volumes", "--json", "bad.raw"])
            .ok()
            .json();
        assert_eq!(check_against_tools(dir, "bad.raw", &ours), 1);
        // The same partitions, from the backup's entry array.
        let strip = |v: &Value| {
            let mut v = v.clone();
            for p in v.as_array_mut().unwrap() {
                p.as_object_mut().unwrap().remove("entry_offset");
            }
            v
        };
        assert_eq!(
            strip(&ours["table"]["partitions"]),
            strip(&good["table"]["partitions"])
        );
        assert_eq!(
            theirs["partitiontable"]["partitions"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(ours["table"]["gpt"]["used"], "backup");
        let problems = ours["problems"].to_string();
        assert!(
            problems.contains("GPT primary header at LBA 1")
                && problems.contains(what)
                && problems.contains(&format!("using the backup header at LBA {last}")),
            "{problems}"
        );
        let text = layerscope(dir, &["volumes", "bad.raw"]).ok().text();
        assert!(
            text.contains("problem: GPT primary header at LBA 1"),
            "{text}"
        );
        // The filesystem is still found, through the backup's table.
        let ls = layerscope(dir, &["ls", "bad.raw"]).ok().text();
        assert!(ls.contains("lost+found"));
    }
    // Both headers damaged: no partition, and a clear error.
    let mut bad = disk.clone();
    bad[512 + 40] ^= 1;
    bad[last * 512 + 40] ^= 1;
    std::fs::write(dir.join("both.raw"), &bad).unwrap();
    let ours = layerscope(dir, &["volumes", "--json", "both.raw"])
        .ok()
        .json();
    assert_eq!(ours["table"]["partitions"].as_array().unwrap().len(), 0);
    assert_eq!(ours["table"]["gpt"]["used"], "none");
    let run = layerscope(dir, &["ls", "both.raw"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no volume holds a filesystem"),
        "{}",
        run.stderr
    );
}
