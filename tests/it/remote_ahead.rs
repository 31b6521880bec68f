//! XFS and FAT over NBD fetch a level of the tree at a time, as ext does
//! (remote_walk.rs): `ls -R` equals the local listing and the tree the
//! image was made from, and in nbdkit's log every second-level directory
//! block is asked for before any third-level one (a depth-first walk
//! without fetching ahead reads a third-level directory between two
//! second-level ones). The TUI fetches ahead the subdirectories on
//! screen. Oracles: the source tree; xfs_db's `bmap`, mtools' `mshowfat`
//! and debugfs's `blocks` for where each directory's blocks are.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::remote_walk::{listed_paths, nbdkit, read_requests, uri};
use crate::util::*;

/// Second-level directories, third-level ones under each, and files in
/// each directory: names long enough that every directory takes blocks of
/// its own (XFS block form, several FAT clusters).
const LEVEL2: usize = 6;
const LEVEL3: usize = 3;
const FILES: usize = 60;

fn file_name(i: usize) -> String {
    format!("a-long-file-name-to-fill-directory-blocks-{i:03}.txt")
}

/// The tree's paths (relative, as `listed_paths` gives them), and its
/// directories by level: (level 2, level 3).
fn tree_paths() -> (BTreeSet<String>, Vec<String>, Vec<String>) {
    let mut paths = BTreeSet::new();
    let (mut l2, mut l3) = (Vec::new(), Vec::new());
    for a in 0..LEVEL2 {
        let d = format!("d{a:02}");
        paths.insert(d.clone());
        l2.push(d.clone());
        for b in 0..LEVEL3 {
            let s = format!("{d}/s{b}");
            paths.insert(s.clone());
            l3.push(s.clone());
            for f in 0..FILES {
                paths.insert(format!("{s}/{}", file_name(f)));
            }
        }
        for f in 0..FILES {
            paths.insert(format!("{d}/{}", file_name(f)));
        }
    }
    (paths, l2, l3)
}

/// The tree as a directory on the host (for mcopy).
fn make_tree(root: &Path) {
    for a in 0..LEVEL2 {
        let d = root.join(format!("d{a:02}"));
        for b in 0..LEVEL3 {
            let s = d.join(format!("s{b}"));
            std::fs::create_dir_all(&s).unwrap();
            for f in 0..FILES {
                std::fs::write(s.join(file_name(f)), format!("{a} {b} {f}\n")).unwrap();
            }
        }
        for f in 0..FILES {
            std::fs::write(d.join(file_name(f)), format!("{a} {f}\n")).unwrap();
        }
    }
}

/// The tree as an mkfs.xfs protofile (files' bytes from `body`).
fn protofile(body: &Path) -> String {
    let file = |p: &mut String, i: usize| {
        p.push_str(&format!("{} ---644 0 0 {}\n", file_name(i), body.display()));
    };
    let mut p = String::from("/dev/null\n0 0\nd--755 0 0\n");
    for a in 0..LEVEL2 {
        p.push_str(&format!("d{a:02} d--755 0 0\n"));
        for b in 0..LEVEL3 {
            p.push_str(&format!("s{b} d--755 0 0\n"));
            (0..FILES).for_each(|f| file(&mut p, f));
            p.push_str("$\n");
        }
        (0..FILES).for_each(|f| file(&mut p, f));
        p.push_str("$\n");
    }
    p.push_str("$\n");
    p
}

/// Where directory `path`'s data blocks are (byte ranges), from xfs_db's
/// `bmap` (the data space only: below the leaf space at 32 GiB).
fn xfs_dir_blocks(dir: &Path, image: &str, path: &str) -> Vec<(u64, u64)> {
    let out = sh(
        dir,
        &[
            "xfs_db",
            "-r",
            "-c",
            &format!("path /{path}"),
            "-c",
            "bmap",
            "-c",
            "sb 0",
            "-c",
            "p agblocks blocksize",
            image,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("xfs_db: no {key} in {text}"))
    };
    let (agblocks, bs) = (value("agblocks = "), value("blocksize = "));
    let mut out = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("data offset ")) {
        // data offset O startblock B (AG/AGB) count N flag F
        let w: Vec<&str> = l.split_whitespace().collect();
        let offset: u64 = w[2].parse().unwrap();
        let (ag, agb) = w[5]
            .trim_matches(|c| c == '(' || c == ')')
            .split_once('/')
            .unwrap();
        let count: u64 = w[7].parse().unwrap();
        if offset.saturating_mul(bs) >= 32 << 30 {
            continue;
        }
        let fsb = ag.parse::<u64>().unwrap() * agblocks + agb.parse::<u64>().unwrap();
        out.push((fsb * bs, count * bs));
    }
    assert!(!out.is_empty(), "/{path} has no data blocks: {text}");
    out
}

/// Where directory `path`'s clusters are (byte ranges), from mshowfat
/// and the boot sector's geometry (Microsoft's FAT specification).
fn fat_dir_clusters(dir: &Path, image: &str, path: &str) -> Vec<(u64, u64)> {
    let boot = std::fs::read(dir.join(image)).unwrap();
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([boot[o], boot[o + 1]]));
    let (bps, spc) = (u16_at(11), u64::from(boot[13]));
    let (reserved, fats, root_entries) = (u16_at(14), u64::from(boot[16]), u16_at(17));
    let fat_size = match u16_at(22) {
        0 => u64::from(u32::from_le_bytes(boot[36..40].try_into().unwrap())),
        n => n,
    };
    let root_bytes = (root_entries * 32).div_ceil(bps) * bps;
    let data = (reserved + fats * fat_size) * bps + root_bytes;
    let cluster = bps * spc;
    let out = Command::new("mshowfat")
        .args(["-i", image, &format!("::/{path}")])
        .current_dir(dir)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "mshowfat ::/{path}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ranges = Vec::new();
    for run in text.split('<').skip(1) {
        let run = run.split('>').next().unwrap();
        let (a, b) = run.split_once('-').unwrap_or((run, run));
        let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
        ranges.push((data + (a - 2) * cluster, (b - a + 1) * cluster));
    }
    assert!(!ranges.is_empty(), "::/{path}: {text}");
    ranges
}

/// `ls -R` of `image` over NBD (nbdkit with its log filter and a short
/// delay) equals the local listing and `want`; in the log, the reads of
/// `level2`'s blocks all come before any read of `level3`'s.
fn check(
    dir: &Path,
    image: &str,
    want: &BTreeSet<String>,
    level2: &[(u64, u64)],
    level3: &[(u64, u64)],
) {
    let local = layerscope(dir, &["ls", "-R", image]).ok().text();
    assert_eq!(&listed_paths(&local), want, "{image}: the local listing");
    let sock = dir.join(format!("{image}.sock"));
    let log = dir.join(format!("{image}.log"));
    let logfile = format!("logfile={}", log.display());
    let server = nbdkit(
        dir,
        &sock,
        &[
            "--filter=log",
            "--filter=delay",
            "file",
            image,
            &logfile,
            "rdelay=2ms",
        ],
    );
    let remote = layerscope(dir, &["ls", "-R", &uri(&sock)]).ok().text();
    drop(server);
    assert!(
        local == remote,
        "{image}: ls -R over NBD differs from the local listing"
    );
    let reads = read_requests(&std::fs::read_to_string(&log).unwrap());
    let overlaps =
        |r: (u64, u64), set: &[(u64, u64)]| set.iter().any(|s| r.0 < s.0 + s.1 && s.0 < r.0 + r.1);
    for (name, set) in [("second", level2), ("third", level3)] {
        for &range in set {
            assert!(
                reads.iter().any(|&r| overlaps(r, &[range])),
                "{image}: the {name} level's block at {:#x} was never read",
                range.0
            );
        }
    }
    // Requests that hold blocks of one level only (a request may join
    // near pages of both), from the first second-level one on (the
    // export probe's first 128 KiB may hold a directory block).
    let only2 = |r: (u64, u64)| overlaps(r, level2) && !overlaps(r, level3);
    let only3 = |r: (u64, u64)| overlaps(r, level3) && !overlaps(r, level2);
    let first2 = reads
        .iter()
        .position(|&r| only2(r))
        .expect("second level reads");
    let last2 = reads.iter().rposition(|&r| only2(r)).unwrap();
    let first3 = first2
        + reads[first2..]
            .iter()
            .position(|&r| only3(r))
            .expect("third level reads");
    assert!(
        last2 < first3,
        "{image}: a third-level directory block was read (request {first3}) before the last second-level one (request {last2}): not a level at a time"
    );
}

#[test]
fn xfs_ls_r_over_nbd_fetches_a_level_at_a_time() {
    if !need("nbdkit") || !need("mkfs.xfs") || !need("xfs_db") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let body = dir.join("body");
    std::fs::write(&body, b"x\n").unwrap();
    let proto = dir.join("proto");
    std::fs::write(&proto, protofile(&body)).unwrap();
    let image = "tree.xfs";
    sh(dir, &["truncate", "-s", "300M", image]);
    // Small test filesystems are allowed only with these set (xfsprogs'
    // own escape for fstests).
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-p", proto.to_str().unwrap(), image])
        .current_dir(dir)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.xfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (want, l2, l3) = tree_paths();
    let level2: Vec<_> = l2
        .iter()
        .flat_map(|p| xfs_dir_blocks(dir, image, p))
        .collect();
    let level3: Vec<_> = l3
        .iter()
        .flat_map(|p| xfs_dir_blocks(dir, image, p))
        .collect();
    check(dir, image, &want, &level2, &level3);
}

#[test]
fn fat_ls_r_over_nbd_fetches_a_level_at_a_time() {
    if !need("nbdkit") || !need("mkfs.vfat") || !need("mcopy") || !need("mshowfat") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    make_tree(&tree);
    let image = "tree.fat";
    sh(dir, &["mkfs.vfat", "-C", "-s", "8", image, "65536"]);
    let mut args = vec!["mcopy".to_owned(), "-s".into(), "-i".into(), image.into()];
    for a in 0..LEVEL2 {
        args.push(tree.join(format!("d{a:02}")).to_str().unwrap().to_owned());
    }
    args.push("::/".into());
    let out = Command::new(&args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcopy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (want, l2, l3) = tree_paths();
    let level2: Vec<_> = l2
        .iter()
        .flat_map(|p| fat_dir_clusters(dir, image, p))
        .collect();
    let level3: Vec<_> = l3
        .iter()
        .flat_map(|p| fat_dir_clusters(dir, image, p))
        .collect();
    check(dir, image, &want, &level2, &level3);
}

/// The TUI over NBD fetches ahead the subdirectories of the listing on
/// screen while it waits for a key: once `/` is open, with no key more,
/// nbdkit's log comes to show the directory blocks of every subdirectory
/// of `/` (as debugfs lists them), which nothing on screen reads.
#[test]
fn the_tui_fetches_the_subdirectories_on_screen_ahead() {
    if !need("nbdkit") || !need("mke2fs") || !need("debugfs") || !need("tmux") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    make_tree(&tree);
    let image = "tree.ext4";
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-d",
            tree.to_str().unwrap(),
            image,
            "64M",
        ],
    );
    let mut blocks = Vec::new();
    for a in 0..LEVEL2 {
        let out = sh(dir, &["debugfs", "-R", &format!("blocks /d{a:02}"), image]);
        for b in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            blocks.push(b.parse::<u64>().unwrap() * 4096);
        }
    }
    assert!(blocks.len() >= LEVEL2, "debugfs: {blocks:?}");
    let sock = dir.join("tui.sock");
    let log = dir.join("tui.log");
    let logfile = format!("logfile={}", log.display());
    let _server = nbdkit(dir, &sock, &["--filter=log", "file", image, &logfile]);
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let t = crate::e2e::Tmux::start(dir, 100, 30, &format!("{bin} '{}'; sleep 60", uri(&sock)));
    t.wait_for("Hex @ 0x0");
    // Open / in the tree: its listing is on screen, then no key more.
    t.keys(&["BTab", "Enter"]);
    t.wait_for("▸ d05");
    let start = std::time::Instant::now();
    loop {
        let reads = read_requests(&std::fs::read_to_string(&log).unwrap());
        let missing: Vec<u64> = blocks
            .iter()
            .copied()
            .filter(|&b| !reads.iter().any(|r| r.0 <= b && b < r.0 + r.1))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "with no key pressed, the blocks of / 's subdirectories at {missing:x?} were not fetched"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
