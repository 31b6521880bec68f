//! FAT12/16/32 against mtools and dosfstools: volumes made with
//! `mkfs.vfat`, filled with `mcopy` (long and unicode names, deep and
//! large directories, a file fragmented by `mdel` and a later copy), then
//! read through layerscope's `Filesystem` and compared with `mdir -/ -b`
//! (every path), `mtype` (every byte), `mshowfat` (every cluster chain),
//! `minfo`/`blkid` (label, serial) and `fsck.fat -n -v` (geometry, free
//! clusters). Then damaged on purpose: a loop, a chain past the FAT, a
//! broken long name, impossible geometry.
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::block::BlockSource;
use layerscope::fs::{self, FileType, Filesystem, FsKind, RunKind};

use crate::util::{need, sh};

mod cli;

fn tools() -> bool {
    need("mkfs.vfat") && need("mcopy") && need("mdir") && need("fsck.fat") && need("mshowfat")
}

/// Runs an mtools command on IMAGE with a UTF-8 locale and no geometry
/// checks; returns stdout.
fn mtools(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LANG", "C.UTF-8")
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A file tree that exercises names and directory sizes.
fn make_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("README.TXT", b"short name only\n");
    w("readme.md", b"lower-case short name\n");
    w("Ünïcödé name.txt", "unicode\n".as_bytes());
    w("a very long name with spaces and dots.tar.gz", &[7u8; 5000]);
    w(
        "EFI/BOOT/BOOTX64.EFI",
        &(0..70_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    w("deep/a/b/c/d/e/f/leaf.conf", b"key=value\n");
    w("empty", b"");
    for i in 0..150 {
        w(
            &format!("many/file number {i:03} with a long name.txt"),
            format!("{i}\n").as_bytes(),
        );
    }
}

/// Makes IMAGE (`mkfs.vfat ARGS`), copies the tree in, then fragments a
/// file: three files, the middle one deleted, a bigger one copied into
/// the gap and past it.
fn make_image(dir: &Path, image: &str, mkfs: &[&str]) {
    // mkfs.vfat -C OPTIONS IMAGE KIB: the size comes last.
    let (size, opts) = mkfs.split_last().unwrap();
    let mut args = vec!["mkfs.vfat", "-C"];
    args.extend_from_slice(opts);
    args.push(image);
    args.push(size);
    let _ = std::fs::remove_file(dir.join(image));
    sh(dir, &args);
    let tree = dir.join("tree");
    if !tree.exists() {
        make_tree(&tree);
    }
    let img = image;
    let mut args = vec!["mcopy", "-s", "-i", img];
    let entries: Vec<String> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .collect();
    for e in &entries {
        args.push(e);
    }
    args.push("::/");
    mtools(dir, &args);
    for (name, len) in [("frag1", 9000usize), ("frag2", 9000), ("frag3", 9000)] {
        std::fs::write(dir.join(name), vec![name.as_bytes()[4]; len]).unwrap();
        mtools(dir, &["mcopy", "-i", img, name, "::/"]);
    }
    mtools(dir, &["mdel", "-i", img, "::/frag2"]);
    // FAT32 allocates after FSInfo's next-free hint, past the gap: set
    // the hint to "unknown" (0xFFFFFFFF, valid) so the search starts over.
    let mut bytes = std::fs::read(dir.join(img)).unwrap();
    if u16::from_le_bytes([bytes[0x16], bytes[0x17]]) == 0 {
        let sector = u16::from_le_bytes([bytes[0x30], bytes[0x31]]) as usize;
        let bps = u16::from_le_bytes([bytes[0xb], bytes[0xc]]) as usize;
        let at = sector * bps + 0x1ec;
        bytes[at..at + 4].copy_from_slice(&[0xff; 4]);
        std::fs::write(dir.join(img), bytes).unwrap();
    }
    let big: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(dir.join("fragmented.bin"), big).unwrap();
    mtools(dir, &["mcopy", "-i", img, "fragmented.bin", "::/"]);
}

fn open(path: &Path) -> Arc<dyn Filesystem> {
    let chain = open_chain(path.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let disk: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
    fs::open(disk).unwrap()
}

/// Every path below the root (directories with a trailing `/`, as
/// `mdir -/ -b` prints them) and its node.
fn walk(fs: &dyn Filesystem) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(fs.root(), String::from("::/"))];
    while let Some((dir, path)) = stack.pop() {
        let mut problems = Vec::new();
        fs.read_dir(dir, &mut problems, &mut |e| {
            if !e.is_dot_or_dotdot() {
                let name = String::from_utf8(e.name.clone()).unwrap();
                if e.file_type == Some(FileType::Directory) {
                    let p = format!("{path}{name}/");
                    out.insert(p.clone(), e.node);
                    stack.push((e.node, p));
                } else {
                    out.insert(format!("{path}{name}"), e.node);
                }
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(problems.is_empty(), "{path}: {problems:?}");
    }
    out
}

/// The whole content of a file through the trait, in odd-sized reads.
fn content(fs: &dyn Filesystem, node: u64) -> Vec<u8> {
    let size = fs.metadata(node).unwrap().size;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 3001];
    while (out.len() as u64) < size {
        let n = fs.read_file(node, out.len() as u64, &mut buf).unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// `mshowfat`'s `<a-b><c>` as cluster runs.
fn showfat_runs(text: &str) -> Vec<(u64, u64)> {
    let Some(start) = text.find('<') else {
        return Vec::new();
    };
    text[start..]
        .split(|c: char| c == '<' || c == '>' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                (a, b - a + 1)
            }
            None => (r.parse().unwrap(), 1),
        })
        .collect()
}

fn fsck_line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
}

/// One layout, compared whole with the tools.
fn check_layout(mkfs: &[&str], kind: FsKind) {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_image(dir, "fat.img", mkfs);
    let fs = open(&dir.join("fat.img"));
    assert_eq!(fs.kind(), kind);

    // Every path, as mdir lists them.
    let paths = walk(fs.as_ref());
    let mdir =
        String::from_utf8(mtools(dir, &["mdir", "-i", "fat.img", "-/", "-b", "::/"])).unwrap();
    let expected: Vec<&str> = mdir.lines().filter(|l| !l.is_empty()).collect();
    let ours: Vec<&str> = paths.keys().map(String::as_str).collect();
    let mut sorted = expected.clone();
    sorted.sort_unstable();
    assert_eq!(ours, sorted);
    assert!(paths.contains_key("::/many/file number 149 with a long name.txt"));

    // Every file's bytes and chain.
    let mut fragmented = false;
    for (path, &node) in &paths {
        let lookup = fs.lookup(path.trim_start_matches("::").as_bytes()).unwrap();
        assert_eq!(lookup, node, "{path}");
        let showfat = String::from_utf8(mtools(
            dir,
            &["mshowfat", "-i", "fat.img", path.trim_end_matches('/')],
        ))
        .unwrap();
        let expected_runs = showfat_runs(&showfat);
        let mut runs = Vec::new();
        let mut problems = Vec::new();
        let cluster = fs.block_size();
        fs.runs(node, &mut problems, &mut |r| {
            assert_eq!(r.kind, RunKind::Data);
            runs.push(r);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(problems.is_empty(), "{path}: {problems:?}");
        let fat = fs
            .as_any()
            .downcast_ref::<layerscope::fs::fat::Fat>()
            .unwrap();
        let ours: Vec<(u64, u64)> = runs
            .iter()
            .map(|r| {
                (
                    (r.physical - fat.boot().data_offset) / cluster + 2,
                    r.len / cluster,
                )
            })
            .collect();
        assert_eq!(ours, expected_runs, "{path}: {showfat}");
        fragmented |= ours.len() > 1 && path.ends_with("fragmented.bin");
        if !path.ends_with('/') {
            let mtype = mtools(dir, &["mtype", "-i", "fat.img", path]);
            assert_eq!(content(fs.as_ref(), node), mtype, "{path}");
        }
    }
    assert!(fragmented, "the test did not manage to fragment a file");

    // Case-insensitive lookup, and by short name.
    let readme = fs.lookup(b"/readme.txt").unwrap();
    assert_eq!(readme, paths["::/README.TXT"]);
    assert_eq!(
        fs.lookup(b"/EFI/boot/bootx64.efi").unwrap(),
        paths["::/EFI/BOOT/BOOTX64.EFI"]
    );
    assert!(fs.lookup(b"/no such file").is_err());

    // Label and serial, as blkid reads them.
    if need("blkid") {
        let get = |k: &str| {
            let out = sh(dir, &["blkid", "-p", "-s", k, "-o", "value", "fat.img"]).stdout;
            let v = String::from_utf8(out).unwrap();
            let v = v.trim_end_matches('\n');
            (!v.is_empty()).then(|| v.to_owned())
        };
        assert_eq!(get("UUID"), fs.uuid());
        assert_eq!(get("LABEL").map(String::into_bytes), fs.label());
    }

    // Geometry and free clusters, as fsck.fat counts them.
    let fsck = String::from_utf8(sh(dir, &["fsck.fat", "-n", "-v", "fat.img"]).stdout).unwrap();
    let fat = fs
        .as_any()
        .downcast_ref::<layerscope::fs::fat::Fat>()
        .unwrap();
    let b = fat.boot();
    assert_eq!(
        fsck_line(&fsck, "Data area starts at byte"),
        format!(
            "Data area starts at byte {} (sector {})",
            b.data_offset,
            b.data_offset / b.bytes_per_sector
        )
    );
    assert!(
        fsck_line(&fsck, &format!("{} data clusters", b.cluster_count))
            .contains(&format!("({} bytes)", b.cluster_count * b.cluster_size))
    );
    let summary = fsck.lines().last().unwrap();
    let (used, total) = summary
        .rsplit_once(", ")
        .unwrap()
        .1
        .trim_end_matches(" clusters")
        .split_once('/')
        .unwrap();
    assert_eq!(total.parse::<u64>().unwrap(), b.cluster_count);
    let groups = fs.groups(0, 10).unwrap();
    assert_eq!(groups.total, 2);
    let free: u64 = groups.rows[0].cells[2].parse().unwrap();
    assert_eq!(
        free,
        b.cluster_count - used.parse::<u64>().unwrap(),
        "{summary}"
    );
    assert!(groups.rows.iter().all(|r| r.ok == Some(true)), "{groups:?}");

    // The boot sector's fields point at their bytes.
    let sb = fs.superblock();
    let bps = sb.field("BPB_BytsPerSec").unwrap();
    assert_eq!((bps.offset, bps.value()), (0xb, b.bytes_per_sector));
    assert!(sb.problems.is_empty(), "{:?}", sb.problems);

    // Dates: mdir -a prints the write time to the minute (TZ=UTC), the
    // hour padded with a space (" 0:03" in the hour after midnight).
    let listing = String::from_utf8(mtools(
        dir,
        &["mdir", "-i", "fat.img", "-a", "::/README.TXT"],
    ))
    .unwrap();
    let line = listing.lines().find(|l| l.starts_with("README")).unwrap();
    let mtime = fs.metadata(readme).unwrap().mtime.unwrap().secs;
    let days = mtime.div_euclid(86400);
    let (y, m, d) = civil(days);
    let hm = mtime.rem_euclid(86400);
    let stamp = format!(
        "{y:04}-{m:02}-{d:02}  {:2}:{:02}",
        hm / 3600,
        hm % 3600 / 60
    );
    assert!(line.contains(&stamp), "{line} vs {stamp}");
}

/// Howard Hinnant's civil_from_days.
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn fat12_equals_mtools() {
    check_layout(&["-F", "12", "-n", "SMALL", "2880"], FsKind::Fat12);
}

#[test]
fn fat16_equals_mtools() {
    check_layout(
        &["-F", "16", "-n", "MIDDLE", "-s", "4", "20000"],
        FsKind::Fat16,
    );
}

#[test]
fn fat32_equals_mtools() {
    check_layout(
        &["-F", "32", "-n", "EFI SYSTEM", "-s", "1", "40000"],
        FsKind::Fat32,
    );
}

/// A FAT16 image with the test tree, its path, and the open filesystem's
/// facts the damage tests need.
fn damaged_base(dir: &Path) -> std::path::PathBuf {
    make_image(dir, "base.img", &["-F", "16", "-s", "4", "20000"]);
    dir.join("base.img")
}

/// Writes `bytes` at `offset` of a copy of BASE named NAME; returns it.
fn patched(base: &Path, name: &str, edits: &[(u64, &[u8])]) -> std::path::PathBuf {
    let mut b = std::fs::read(base).unwrap();
    for (at, bytes) in edits {
        let at = *at as usize;
        b[at..at + bytes.len()].copy_from_slice(bytes);
    }
    let p = base.with_file_name(name);
    std::fs::write(&p, b).unwrap();
    p
}

fn runs_problems(fs: &dyn Filesystem, node: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut n = 0usize;
    fs.runs(node, &mut problems, &mut |_| {
        n += 1;
        assert!(n < 100_000, "runs do not end");
        ControlFlow::Continue(())
    })
    .unwrap();
    problems.iter().map(ToString::to_string).collect()
}

#[test]
fn damaged_fat_volumes_give_clear_errors() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = damaged_base(tmp.path());
    let fs = open(&base);
    let fat = fs
        .as_any()
        .downcast_ref::<layerscope::fs::fat::Fat>()
        .unwrap();
    let b = fat.boot().clone();
    let node = fs.lookup(b"/fragmented.bin").unwrap();
    let e = fat.entry(node).unwrap().unwrap();
    let first = u64::from(e.first_cluster);
    let entry_at = |c: u64| b.fat_offset + 2 * c;
    let mut chain = Vec::new();
    fs.runs(node, &mut Vec::new(), &mut |r| {
        chain.push((
            (r.physical - b.data_offset) / b.cluster_size + 2,
            r.len / b.cluster_size,
        ));
        ControlFlow::Continue(())
    })
    .unwrap();
    let (last_run, last_len) = *chain.last().unwrap();
    let last = last_run + last_len - 1;

    // The last cluster leads back to the first: a loop, found and named.
    let img = patched(
        &base,
        "loop.img",
        &[(entry_at(last), &(first as u16).to_le_bytes())],
    );
    let fs2 = open(&img);
    let p = runs_problems(fs2.as_ref(), node);
    assert!(p.iter().any(|p| p.contains("loops")), "{p:?}");

    // An entry naming no cluster of the volume.
    let img = patched(
        &base,
        "past.img",
        &[(entry_at(first), &0xfff0u16.to_le_bytes())],
    );
    let fs2 = open(&img);
    let p = runs_problems(fs2.as_ref(), node);
    assert!(
        p.iter().any(|p| p.contains("0xfff0, not a cluster")),
        "{p:?}"
    );
    let mut buf = vec![0u8; 40_000];
    let err = fs2.read_file(node, 0, &mut buf).unwrap_err().to_string();
    assert!(
        err.contains("DIR_FileSize") && err.contains("chain"),
        "{err}"
    );

    // A free entry in the middle of the chain.
    let img = patched(&base, "free.img", &[(entry_at(first), &[0, 0])]);
    let p = runs_problems(open(&img).as_ref(), node);
    assert!(p.iter().any(|p| p.contains("a free entry")), "{p:?}");

    // A directory whose cluster leads to itself: listed once, bounded.
    let many = fs.lookup(b"/many").unwrap();
    let m = fat.entry(many).unwrap().unwrap().first_cluster as u64;
    let img = patched(
        &base,
        "dirloop.img",
        &[(entry_at(m), &(m as u16).to_le_bytes())],
    );
    let fs2 = open(&img);
    let mut problems = Vec::new();
    let mut n = 0;
    fs2.read_dir(many, &mut problems, &mut |_| {
        n += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(n > 0 && n < 65_536, "{n}");
    assert!(
        problems.iter().any(|p| p.to_string().contains("loops")),
        "{problems:?}"
    );

    // A long name whose second piece has a wrong sequence number: the
    // short name is used and the damage reported.
    let mut long_at = 0;
    fs.read_dir(fs.root(), &mut Vec::new(), &mut |e| {
        if e.name.starts_with(b"a very long name") {
            long_at = e.offset.unwrap();
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_ne!(long_at, 0);
    let img = patched(&base, "lfn.img", &[(long_at + 32, &[0x09])]);
    let fs2 = open(&img);
    let mut problems = Vec::new();
    let mut names = Vec::new();
    fs2.read_dir(fs2.root(), &mut problems, &mut |e| {
        names.push(String::from_utf8(e.name).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(names.iter().any(|n| n == "AVERYL~1.GZ"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("a very")), "{names:?}");
    assert!(
        problems.iter().any(|p| p.to_string().contains("sequence")),
        "{problems:?}"
    );

    // Impossible geometry: no cluster size, no volume at all.
    let img = patched(&base, "spc0.img", &[(0xd, &[0])]);
    let chain = open_chain(img.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let disk: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
    let err = fs::open(disk).err().unwrap().to_string();
    assert!(err.contains("BPB_SecPerClus"), "{err}");
    // Sectors that cannot hold the FATs.
    let img = patched(&base, "tot.img", &[(0x13, &64u16.to_le_bytes())]);
    let chain = open_chain(img.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let disk: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
    let err = fs::open(disk).err().unwrap().to_string();
    assert!(err.contains("BPB_TotSec") && err.contains("fewer"), "{err}");
}

/// FAT32 with its root directory's cluster 0 or 1: the listing says the
/// chain cannot start there.
#[test]
fn fat32_root_cluster_outside_the_volume() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sh(
        dir,
        &["mkfs.vfat", "-C", "-F", "32", "-s", "1", "f32.img", "40000"],
    );
    for bad in [0u32, 1, 0x0fff_fff0] {
        let img = patched(
            &dir.join("f32.img"),
            "bad.img",
            &[(0x2c, &bad.to_le_bytes())],
        );
        let fs = open(&img);
        let mut problems = Vec::new();
        fs.read_dir(fs.root(), &mut problems, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.to_string().contains("not a data cluster")),
            "{bad}: {problems:?}"
        );
    }
}

/// Through a qcow2 chain: the base as FAT16, an overlay that adds a file
/// (made with mcopy on a copy, then `qemu-img rebase` to keep only what
/// changed): the top shows it, `--layer 0` does not, and the file's
/// clusters are held by the overlay.
#[test]
fn fat_through_a_qcow2_chain() {
    if !tools() || !need("qemu-img") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_image(dir, "flat0.img", &["-F", "16", "-s", "4", "20000"]);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-O",
            "qcow2",
            "flat0.img",
            "base.qcow2",
        ],
    );
    std::fs::copy(dir.join("flat0.img"), dir.join("flat1.img")).unwrap();
    std::fs::write(dir.join("new.txt"), b"added in the overlay\n").unwrap();
    mtools(dir, &["mcopy", "-i", "flat1.img", "new.txt", "::/EFI/"]);
    crate::util::thin_overlay(
        dir,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("flat1.img"),
        "",
        false,
    );
    let top = open_chain(
        dir.join("top.qcow2").to_str().unwrap(),
        ChainOptions::default(),
        &FsOpener,
    )
    .unwrap();
    let reader = Arc::new(LayeredReader::new(&top).unwrap());
    let fs = fs::open(reader.clone()).unwrap();
    let node = fs.lookup(b"/EFI/new.txt").unwrap();
    let mut buf = vec![0u8; 100];
    let n = fs.read_file(node, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"added in the overlay\n");
    let mut runs = Vec::new();
    fs.runs(node, &mut Vec::new(), &mut |r| {
        runs.push(r);
        ControlFlow::Continue(())
    })
    .unwrap();
    let owner = reader.owner(runs[0].physical, runs[0].len).unwrap();
    assert_eq!(owner.layer, Some(1), "{owner:?}");
    let base = top.cut(0);
    let disk: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&base).unwrap());
    let fs0 = fs::open(disk).unwrap();
    assert!(fs0.lookup(b"/EFI/new.txt").is_err());
    assert_eq!(
        walk(fs0.as_ref()),
        walk(open(&dir.join("flat0.img")).as_ref())
    );
}

/// The FAT copies' free clusters and their comparison skip what reads as
/// zeros: a FAT32 of 4 million clusters (two 16 MiB tables, almost all
/// free) as a qcow2, where qemu-img convert left the free parts of the
/// tables unallocated. The counts equal fsck.fat's on the raw image, on
/// the qcow2 (holes skipped) and on the raw (every byte read), the
/// copies are found equal, and a byte changed in the second copy's
/// unallocated part (a zero cluster becomes data) is still found.
#[test]
fn fat32_tables_with_holes_count_as_fsck_fat() {
    if !tools() || !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_image(
        dir,
        "big.img",
        &["-F", "32", "-S", "512", "-s", "1", "2097152"],
    );
    let fsck = String::from_utf8(sh(dir, &["fsck.fat", "-n", "-v", "big.img"]).stdout).unwrap();
    let summary = fsck.lines().last().unwrap();
    let (used, total) = summary
        .rsplit_once(", ")
        .unwrap()
        .1
        .trim_end_matches(" clusters")
        .split_once('/')
        .unwrap();
    let (used, total): (u64, u64) = (used.parse().unwrap(), total.parse().unwrap());
    assert!(total > 4_000_000, "{summary}");
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-O",
            "qcow2",
            "big.img",
            "big.qcow2",
        ],
    );
    for image in ["big.qcow2", "big.img"] {
        let fs = open(&dir.join(image));
        let groups = fs.groups(0, 10).unwrap();
        assert_eq!(groups.total, 2, "{image}");
        for row in &groups.rows {
            let free: u64 = row.cells[2].parse().unwrap();
            assert_eq!(free, total - used, "{image}: {summary}");
            assert_eq!(row.ok, Some(true), "{image}: {row:?}");
        }
    }
    // The entry of the middle cluster in the second table, free (zeros)
    // and unallocated in the qcow2: made "end of chain", the copies
    // differ and copy 1 has one free cluster fewer.
    let fs = open(&dir.join("big.img"));
    let fat = fs
        .as_any()
        .downcast_ref::<layerscope::fs::fat::Fat>()
        .unwrap();
    let b = fat.boot().clone();
    let table = b.fat_sectors * b.bytes_per_sector;
    let at = b.fat_offset + table + b.cluster_count / 2 * 4;
    let map: Vec<serde_json::Value> =
        serde_json::from_slice(&sh(dir, &["qemu-img", "map", "--output=json", "big.qcow2"]).stdout)
            .unwrap();
    let here = map
        .iter()
        .find(|e| {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            (s..s + l).contains(&at)
        })
        .unwrap();
    assert_eq!(here["data"], false, "the entry's cluster is a hole: {here}");
    sh(
        dir,
        &[
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            &format!("write -P 0xff {at} 4"),
            "big.qcow2",
        ],
    );
    let fs = open(&dir.join("big.qcow2"));
    let groups = fs.groups(0, 10).unwrap();
    let free: Vec<u64> = groups
        .rows
        .iter()
        .map(|r| r.cells[2].parse().unwrap())
        .collect();
    assert_eq!(free, vec![total - used, total - used - 1]);
    assert_eq!(groups.rows[1].ok, Some(false), "{:?}", groups.rows[1]);
    assert!(groups.rows[1].cells[3].starts_with("DIFFERS"));
}
