//! The TUI on a partitioned qcow2 chain: GPT with a BIOS boot partition,
//! a FAT32 ESP, an ext4 root and an XFS data partition, each made by its
//! own mkfs and copied in at its partition's offset, then a thin overlay
//! that rewrites one file of the root. The Volumes pane lists what
//! `sfdisk --json` says (start, size); the TUI opens straight into the
//! root (the first filesystem volume, the ESP passed over), the tree
//! equals `debugfs ls`, a file's bytes show at the disk offset `debugfs
//! bmap` gives plus the partition's start, as of the overlay; Enter on
//! another volume shows its filesystem in every pane (the XFS tree equals
//! `xfs_db ls`, its Groups pane has `agcount` rows; the ESP's equals
//! `mdir`).
use std::path::Path;

use serde_json::Value;

use crate::util::*;
use crate::volumes::{put, sfdisk, sparse};

const M: u64 = 1 << 20;
/// (first sector, MiB, GPT type, name).
const PARTS: [(u64, u64, &str, &str); 4] = [
    (2048, 1, "21686148-6449-6E6F-744E-656564454649", "bios boot"),
    (4096, 40, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ESP"),
    (86016, 64, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "root"),
    (217088, 300, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "data"),
];

/// Builds the chain in `dir`: `top.qcow2` over `base.qcow2`, and the
/// filesystems alone (`esp.raw`, `root.raw`, `data.raw`) for the oracles.
pub fn build(dir: &Path) {
    sparse(dir, "disk.raw", 520 * M);
    let mut script = String::from("label: gpt\n");
    for (start, mib, kind, name) in PARTS {
        script.push_str(&format!(
            "start={start}, size={}, type={kind}, name=\"{name}\"\n",
            mib * 2048
        ));
    }
    sfdisk(dir, "disk.raw", &script);
    // The ESP: FAT32 with a boot loader.
    sh(
        dir,
        &[
            "mkfs.vfat",
            "-F",
            "32",
            "-n",
            "ESP",
            "-C",
            "esp.raw",
            "40960",
        ],
    );
    std::fs::create_dir_all(dir.join("EFI/BOOT")).unwrap();
    std::fs::write(dir.join("EFI/BOOT/BOOTX64.EFI"), b"MZ boot loader\n").unwrap();
    sh(dir, &["mcopy", "-s", "-i", "esp.raw", "EFI", "::/"]);
    // The root: ext4 with /etc/hostname.
    let root = dir.join("rootdir");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("home/user")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"old-host\n").unwrap();
    std::fs::write(root.join("home/user/notes.txt"), vec![b'n'; 10_000]).unwrap();
    sh(
        dir,
        &[
            "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "root", "-d", "rootdir",
            "root.raw", "64M",
        ],
    );
    // The data partition: XFS with one file.
    std::fs::write(dir.join("report.txt"), b"quarterly\n").unwrap();
    let proto = format!(
        "/dev/null\n0 0\nd--755 0 0\nreport.txt ---644 0 0 {}\nsub d--755 0 0\n$\n$\n",
        dir.join("report.txt").display()
    );
    std::fs::write(dir.join("proto"), proto).unwrap();
    sh(dir, &["truncate", "-s", "300M", "data.raw"]);
    sh(
        dir,
        &[
            "mkfs.xfs", "-q", "-f", "-L", "data", "-p", "proto", "data.raw",
        ],
    );
    for (i, image) in [(1, "esp.raw"), (2, "root.raw"), (3, "data.raw")] {
        put(dir, image, "disk.raw", PARTS[i].0 * 512);
    }
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "disk.raw",
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
    // The overlay rewrites /etc/hostname's block (same length).
    let at = hostname_offset(dir);
    sh(
        dir,
        &[
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            &format!("write -P 0x6e {at} 3"),
            "top.qcow2",
        ],
    );
}

/// Where /etc/hostname's first byte is on the disk: its block (debugfs
/// bmap on the root filesystem alone) from the root partition's start.
pub fn hostname_offset(dir: &Path) -> u64 {
    let out = sh(dir, &["debugfs", "-R", "bmap /etc/hostname 0", "root.raw"]);
    let block: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    PARTS[2].0 * 512 + block * 4096
}

fn render(dir: &Path, keys: &str) -> String {
    layerscope(
        dir,
        &["render", "top.qcow2", "--size", "200x60", "--keys", keys],
    )
    .ok()
    .text()
}

/// The rows of the pane titled `title` (its left column when panes sit
/// side by side): the text between its borders.
pub fn pane(frame: &str, title: &str) -> Vec<String> {
    let lines: Vec<&str> = frame.lines().collect();
    let (top, col) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| l.find(&format!("┌{title}")).map(|c| (i, c)))
        .unwrap_or_else(|| panic!("no pane {title} in\n{frame}"));
    let col = l_chars(lines[top], col);
    let mut out = Vec::new();
    for l in &lines[top + 1..] {
        let chars: Vec<char> = l.chars().collect();
        if chars.get(col) == Some(&'└') {
            break;
        }
        let row: String = chars[col + 1..].iter().take_while(|&&c| c != '│').collect();
        out.push(row);
    }
    out
}

/// The char index of byte `at` in `line`.
fn l_chars(line: &str, at: usize) -> usize {
    line[..at].chars().count()
}

/// Names in a tree pane's rows below the root (`▸ etc`, `  hostname`).
pub fn tree_names(rows: &[String]) -> Vec<String> {
    rows.iter()
        .skip(1)
        .filter_map(|r| {
            let name = r
                .trim_start_matches(['▶', ' '])
                .trim_start_matches(['▸', '▾', ' ']);
            let name = name.split("  ").next()?.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn volumes_pane_and_each_volume_s_filesystem_over_a_gpt_chain() {
    let tools = [
        "sfdisk",
        "qemu-img",
        "qemu-io",
        "mke2fs",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "mdir",
        "mkfs.xfs",
        "xfs_db",
        "truncate",
        "dd",
    ];
    if !tools.iter().all(|t| need(t)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    // The Volumes pane: each partition where sfdisk says, with its size.
    let table: Value =
        serde_json::from_slice(&sh(dir, &["sfdisk", "--json", "disk.raw"]).stdout).unwrap();
    let frame = render(dir, "");
    let volumes = pane(&frame, "Volumes");
    for (i, p) in table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let start = p["start"].as_u64().unwrap() * 512;
        let size = p["size"].as_u64().unwrap() * 512;
        let row = volumes
            .iter()
            .find(|r| {
                r.trim_start_matches(['▶', ' '])
                    .starts_with(&format!("p{} ", i + 1))
            })
            .unwrap_or_else(|| panic!("no p{} in\n{}", i + 1, volumes.join("\n")));
        assert!(row.contains(&format!("{start:#x}")), "{row}");
        assert!(
            row.contains(&layerscope::units::human(size)),
            "{row}: {size}"
        );
    }
    // Straight into the root: the first filesystem volume, the ESP passed
    // over, marked in the pane and named in the superblock's title.
    let current = volumes.iter().find(|r| r.starts_with('▶')).unwrap();
    assert!(
        current.contains("p3") && current.contains("ext4"),
        "{current}"
    );
    assert!(frame.contains("Superblock (ext4) on p3"), "{frame}");
    // The tree equals debugfs's listing of the root filesystem alone.
    let tree = tree_names(&pane(&render(dir, "2 Enter"), "Tree"));
    let ls = sh(dir, &["debugfs", "-R", "ls -p /", "root.raw"]);
    let mut want: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_owned))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect();
    want.sort();
    let mut got = tree.clone();
    got.sort();
    assert_eq!(got, want, "{tree:?}");
    // /etc/hostname: its bytes at the disk offset debugfs gives plus the
    // partition's start, as of the overlay (which rewrote "old").
    let frame = render(dir, "2 Enter Down Enter Down Enter");
    let at = hostname_offset(dir);
    let row = format!("{:08x} ", at & !15);
    let line = frame
        .lines()
        .find(|l| l.contains(&row))
        .unwrap_or_else(|| panic!("no row {row} in\n{frame}"));
    let cut = at as usize % 16;
    let hex: Vec<&str> = line[line.find(&row).unwrap() + row.len()..]
        .split_whitespace()
        .take(16)
        .collect();
    let want: Vec<String> = b"nnn-host\n".iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex[cut..cut + want.len()], want[..], "{line}");
    // The XFS data partition: Enter on p4 in the Volumes pane.
    let frame = render(dir, "8 Down Down Down Down Enter 2 Enter");
    assert!(frame.contains("Superblock (xfs) on p4"), "{frame}");
    let volumes = pane(&frame, "Volumes");
    let current = volumes.iter().find(|r| r.starts_with('▶')).unwrap();
    assert!(current.contains("p4"), "{current}");
    let mut tree = tree_names(&pane(&frame, "Tree"));
    tree.sort();
    let ls = xfs_ls(dir, "data.raw");
    assert_eq!(tree, ls);
    let agcount: usize = xfs_field(dir, "data.raw", "agcount").parse().unwrap();
    let groups = pane(&frame, "Groups");
    let rows = groups
        .iter()
        .filter(|r| {
            r.trim_start_matches(['▶', ' '])
                .split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<usize>().is_ok())
        })
        .count();
    assert_eq!(rows, agcount, "{}", groups.join("\n"));
    // The superblock shows the magic decoded where the field table says.
    let sb = pane(&frame, "Superblock").join("\n");
    assert!(sb.contains("magicnum"), "{sb}");
    // The ESP: FAT32, its tree equals mdir's.
    let frame = render(dir, "8 Down Down Enter 2 Enter");
    assert!(frame.contains("Boot sector (vfat) on p2"), "{frame}");
    let tree = tree_names(&pane(&frame, "Tree"));
    let mdir = sh(dir, &["mdir", "-b", "-i", "esp.raw", "::/"]);
    let want: Vec<String> = String::from_utf8_lossy(&mdir.stdout)
        .lines()
        .map(|l| l.trim_start_matches("::/").trim_end_matches('/').to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(tree, want);
}

/// `xfs_db -r -c 'ls /'` (rows of `offset ino type hash namelen name`):
/// the names, sorted, without `.` and `..` (the test's have no spaces).
fn xfs_ls(dir: &Path, image: &str) -> Vec<String> {
    let out = sh(dir, &["xfs_db", "-r", "-c", "ls /", image]);
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// One superblock field as `xfs_db -r -c 'sb 0' -c 'print FIELD'` says.
fn xfs_field(dir: &Path, image: &str, field: &str) -> String {
    let out = sh(
        dir,
        &[
            "xfs_db",
            "-r",
            "-c",
            "sb 0",
            "-c",
            &format!("print {field}"),
            image,
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .split('=')
        .nth(1)
        .unwrap()
        .trim()
        .to_owned()
}

/// Where `needle` (once in the file) is in `image`.
fn find_in(dir: &Path, image: &str, needle: &[u8]) -> u64 {
    let bytes = std::fs::read(dir.join(image)).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {image}"));
    assert!(
        !bytes[at + 1..].windows(needle.len()).any(|w| w == needle),
        "{needle:?} twice in {image}"
    );
    at as u64
}

/// The layer diff (`d`), the hit map's volume mark and `g b<N>` on each
/// volume of the GPT chain, after the overlay also rewrote the first
/// bytes of a file in the ESP (FAT) and one in the XFS partition: each
/// volume's changes are the CLI's `diff --volume` and name the file that
/// was written; the side by side view shows the bytes mtype / the file
/// itself give; the hit map's cells outside the volume (sfdisk's start
/// and size) are shaded; `g b<N>` lands where `debugfs bmap` says.
#[test]
fn diff_hit_map_and_blocks_on_each_volume() {
    let tools = [
        "sfdisk",
        "qemu-img",
        "qemu-io",
        "mke2fs",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "mtype",
        "mkfs.xfs",
        "xfs_db",
        "truncate",
        "dd",
    ];
    if !tools.iter().all(|t| need(t)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    let boot = PARTS[1].0 * 512 + find_in(dir, "esp.raw", b"MZ boot loader");
    let report = PARTS[3].0 * 512 + find_in(dir, "data.raw", b"quarterly\n");
    for at in [boot, report] {
        sh(
            dir,
            &[
                "qemu-io",
                "-f",
                "qcow2",
                "-c",
                &format!("write -P 0x51 {at} 3"),
                "top.qcow2",
            ],
        );
    }
    // The new bytes as the tools read them from the flattened chain.
    sh(
        dir,
        &["qemu-img", "convert", "-O", "raw", "top.qcow2", "flat.raw"],
    );
    let esp_at = format!("{}", PARTS[1].0 * 512);
    let new_boot = sh(
        dir,
        &[
            "mtype",
            "-i",
            &format!("flat.raw@@{esp_at}"),
            "::/EFI/BOOT/BOOTX64.EFI",
        ],
    )
    .stdout;
    assert_eq!(new_boot, b"QQQboot loader\n");
    let frame_of = |volume: &str, keys: &str, size: &str| {
        layerscope(
            dir,
            &[
                "render",
                "top.qcow2",
                "--volume",
                volume,
                "--size",
                size,
                "--keys",
                keys,
            ],
        )
        .ok()
        .text()
    };
    for (volume, path, old, new) in [
        (
            "p2",
            "/EFI/BOOT/BOOTX64.EFI",
            &b"MZ boot loader\n"[..],
            &new_boot[..],
        ),
        ("p3", "/etc/hostname", b"old-host\n", b"nnn-host\n"),
        ("p4", "/report.txt", b"quarterly\n", b"QQQrterly\n"),
    ] {
        let cli = layerscope(dir, &["diff", "--json", "--volume", volume, "top.qcow2"])
            .ok()
            .json();
        let changes: Vec<String> = cli["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(changes, [path], "{volume}: {cli:#}");
        let frame = frame_of(volume, "d", "200x60");
        let list = pane(&frame, "Changes").join("\n");
        assert!(list.contains(&format!("1 change(s) on {volume}")), "{list}");
        assert!(list.contains(&format!("M {path}")), "{list}");
        // Enter: the file side by side, old bytes left, new right.
        let frame = frame_of(volume, "d Enter", "200x60");
        let hex = |b: &[u8]| {
            b.iter()
                .take(8)
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let row = frame
            .lines()
            .find(|l| l.contains("00000000│"))
            .unwrap_or_else(|| panic!("no compare row in\n{frame}"));
        let (left, right) = row
            .split_once("00000000│")
            .unwrap()
            .1
            .split_once('│')
            .unwrap();
        assert!(left.starts_with(&hex(old)), "{volume} old: {row}");
        assert!(right.starts_with(&hex(new)), "{volume} new: {row}");
    }
    // The hit map: cells holding any byte of the volume show their layer;
    // the others are shaded. The grid is the pane's rows above the legend.
    let table: Value =
        serde_json::from_slice(&sh(dir, &["sfdisk", "--json", "disk.raw"]).stdout).unwrap();
    let disk = std::fs::metadata(dir.join("disk.raw")).unwrap().len();
    for (i, volume) in ["p3", "p4"].iter().enumerate() {
        let p = &table["partitiontable"]["partitions"][i + 2];
        let (start, size) = (
            p["start"].as_u64().unwrap() * 512,
            p["size"].as_u64().unwrap() * 512,
        );
        let frame = frame_of(volume, "", "200x60");
        let rows = pane(&frame, "Hit map");
        let legend = rows
            .iter()
            .position(|r| r.contains(&format!("░outside {volume}")))
            .unwrap_or_else(|| panic!("no legend in {rows:#?}"));
        let cells: Vec<char> = rows[..legend].iter().flat_map(|r| r.chars()).collect();
        let cell = disk.div_ceil(cells.len() as u64);
        let (mut inside, mut outside) = (0, 0);
        for (k, c) in cells.iter().enumerate() {
            let (a, b) = (k as u64 * cell, (k as u64 + 1) * cell);
            let overlaps = a < start + size && start < b;
            match c {
                '░' => {
                    assert!(
                        !overlaps,
                        "{volume}: cell {k} shaded inside [{start:#x}, +{size:#x})"
                    );
                    outside += 1;
                }
                '0'..='9' => {
                    assert!(
                        overlaps,
                        "{volume}: cell {k} ({c}) outside [{start:#x}, +{size:#x})"
                    );
                    inside += 1;
                }
                _ => {}
            }
        }
        assert!(
            inside > 0 && outside > 0,
            "{volume}: {inside} {outside}\n{frame}"
        );
    }
    // g b<N> on the root: block N of p3 at the partition's start, as
    // debugfs bmap names /etc/hostname's block.
    let out = sh(dir, &["debugfs", "-R", "bmap /etc/hostname 0", "root.raw"]);
    let block: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let frame = frame_of("p3", &format!("g b{block} Enter"), "120x40");
    let at = hostname_offset(dir);
    assert!(frame.contains(&format!("Hex @ {at:#x}")), "{frame}");
    assert!(frame.contains(&format!("block {block}")), "{frame}");
    insta::assert_snapshot!("volume_diff_xfs_80x24", frame_of("p4", "d", "80x24"));
    // The hex view on the BIOS boot partition (zeros: the GPT header
    // holds random GUIDs).
    insta::assert_snapshot!(
        "volume_hitmap_p3_120x40",
        frame_of("p3", "g 0x100000 Enter 4", "120x40")
    );
}
