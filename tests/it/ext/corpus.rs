//! The e2fsprogs test images (many of them corrupt) through the library:
//! no panic, no hang, no huge allocation; where dumpe2fs read an image, the
//! superblock agrees with it.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::block::probe::Format;
use layerscope::fs::ext::{Ext4, FsError};

use crate::util::*;

/// Longest time one image may take (debug build, a shared machine).
const LIMIT: Duration = Duration::from_secs(60);
/// Inodes visited per image at most.
const MAX_INODES: usize = 20_000;

/// What the walk of one image found.
#[derive(Debug, Default)]
struct Walk {
    /// The superblock facts the manifest has: features, block size, block
    /// count, inode count. `None` when the filesystem did not open.
    facts: Option<[String; 4]>,
    /// The error when it did not open.
    open_error: Option<String>,
    not_ext: bool,
    inodes: usize,
    problems: usize,
}

/// Everything the commands do, through the library: info (superblock,
/// journal), groups (descriptors, placement, bitmap checksums), ls -R,
/// stat (fields, block map, attributes, htree, symlink targets) and cat
/// (up to 1 MiB) of every reachable inode.
fn walk(path: &Path) -> Walk {
    let mut w = Walk::default();
    let opts = ChainOptions {
        format: Some(Format::Raw),
        backing_format: None,
        ..Default::default()
    };
    let chain = open_chain(path.to_str().unwrap(), opts, &FsOpener).unwrap();
    let reader = Arc::new(LayeredReader::new(&chain).unwrap());
    let fs = match Ext4::open(reader) {
        Ok(fs) => fs,
        Err(FsError::NotExt { .. }) => {
            w.not_ext = true;
            return w;
        }
        Err(e) => {
            w.open_error = Some(e.to_string());
            return w;
        }
    };
    let sb = fs.superblock();
    let mut features = layerscope::fs::ext::superblock::feature_names(
        sb.feature_compat,
        sb.feature_incompat,
        sb.feature_ro_compat,
    )
    .join(" ");
    if features.is_empty() {
        features = "(none)".into();
    }
    w.facts = Some([
        features,
        sb.block_size.to_string(),
        sb.blocks_count.to_string(),
        sb.inodes_count.to_string(),
    ]);
    if let Some(j) = fs.journal() {
        let _ = j.lines(sb.block_size, true);
    }
    for g in 0..sb.group_count().min(1 << 16) {
        let _ = layerscope::fs::ext::group_desc::placement(sb, g);
        if let Ok(d) = fs.group(g) {
            let _ = fs.bitmap_checksums(&d);
        }
    }
    let mut stack = vec![2u64];
    let mut seen = std::collections::HashSet::new();
    let mut buf = Vec::new();
    while let Some(ino) = stack.pop() {
        if !seen.insert(ino) || seen.len() > MAX_INODES {
            continue;
        }
        w.inodes += 1;
        let Ok(node) = fs.inode(ino) else {
            w.problems += 1;
            continue;
        };
        w.problems += node.problems.len();
        let _ = node.fields();
        if let Ok(x) = fs.xattrs(&node) {
            w.problems += x.problems.len();
        }
        let map = fs.block_map(&node);
        if let Ok(m) = &map {
            w.problems += m.skipped.len() + m.warnings.len();
        }
        if node.is_dir() {
            let _ = fs.htree(&node);
            if let Ok(listing) = fs.list_dir(&node) {
                w.problems += listing.problems.len();
                stack.extend(listing.entries.iter().map(|e| u64::from(e.inode)));
            }
        } else if node.is_symlink() {
            let _ = fs.symlink_target(&node);
        } else if let Ok(m) = &map {
            buf.resize(node.size.min(1 << 20) as usize, 0);
            let _ = fs.read_file(&node, &m.runs, 0, &mut buf);
        }
    }
    w
}

/// Whether dumpe2fs with `args` succeeds.
fn dumpe2fs_ok(args: &[&str]) -> bool {
    std::process::Command::new("dumpe2fs")
        .args(args)
        .env("TZ", "UTC")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The images of one corpus file (a .tar.bz2 holds several: external
/// journal tests), decompressed into `tmp`.
/// debugfs, the oracle here, reads a filesystem as it is on disk;
/// layerscope by default reads it as the kernel would mount it, its
/// journal replayed. Where an image needs recovery, e2fsck's journal
/// replay (the kernel's algorithm; `live::bad` checks ours against it)
/// is applied to the copy first, so both read the same filesystem.
fn recovered(path: &Path) {
    let Ok(out) = std::process::Command::new("dumpe2fs")
        .arg("-h")
        .arg(path)
        .output()
    else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if text
        .lines()
        .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery"))
    {
        // Bounded: e2fsck 1.47 can restart forever on some damage, and
        // does not always stop for SIGTERM there (killed 5 s later).
        let _ = std::process::Command::new("timeout")
            .args(["-k", "5", "60", "e2fsck", "-y", "-E", "journal_only"])
            .arg(path)
            .output();
    }
}

pub(crate) fn images(dir: &Path, file: &str, tmp: &Path) -> Vec<PathBuf> {
    if file.ends_with(".tar.bz2") {
        let into = tmp.join("tar");
        let _ = std::fs::remove_dir_all(&into);
        std::fs::create_dir_all(&into).unwrap();
        sh(dir, &["tar", "-xjf", file, "-C", into.to_str().unwrap()]);
        let mut found = Vec::new();
        let mut todo = vec![into];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) > 0 {
                    found.push(p);
                }
            }
        }
        found.sort();
        return found;
    }
    let bytes = if file.ends_with(".bz2") {
        sh(dir, &["bzip2", "-dc", file]).stdout
    } else {
        let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(dir.join(file)).unwrap());
        let mut bytes = Vec::new();
        gz.read_to_end(&mut bytes)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        bytes
    };
    if bytes.is_empty() {
        return Vec::new();
    }
    // Named after the corpus file, so messages say which image failed.
    let path = tmp.join(file.split('.').next().unwrap_or("image"));
    std::fs::write(&path, &bytes).unwrap();
    vec![path]
}

/// Every image of the e2fsprogs test suite, many of them corrupt, each in
/// its own thread with a time limit: no panic, no hang; where dumpe2fs
/// read the superblock, our features, sizes and counts agree with the
/// manifest's.
#[test]
fn e2fsprogs_corpus() {
    let Some(corpus) = corpus() else { return };
    let dir = corpus.join("e2fsprogs");
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (mut opened, mut not_ext, mut total, mut inodes, mut problems) = (0, 0, 0, 0, 0);
    let mut slowest = (Duration::ZERO, String::new());
    let (mut info_checked, mut groups_checked) = (0, 0);
    let dumpe2fs = need("dumpe2fs");
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        let file = cols[col("file")];
        let single = !file.ends_with(".tar.bz2");
        for path in images(&dir, file, tmp.path()) {
            total += 1;
            let name = format!("{file} ({})", path.file_name().unwrap().to_string_lossy());
            let start = Instant::now();
            let (tx, rx) = mpsc::channel();
            let p = path.clone();
            let worker = std::thread::spawn(move || {
                let _ = tx.send(walk(&p));
            });
            let w = match rx.recv_timeout(LIMIT) {
                Ok(w) => w,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{name}: still running after {LIMIT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The worker panicked: show its message.
                    match worker.join() {
                        Err(e) => std::panic::resume_unwind(e),
                        Ok(()) => unreachable!(),
                    }
                }
            };
            worker.join().unwrap();
            let took = start.elapsed();
            if took > slowest.0 {
                slowest = (took, name.clone());
            }
            inodes += w.inodes;
            problems += w.problems;
            if w.not_ext {
                not_ext += 1;
                if single {
                    assert_ne!(
                        cols[col("raw_magic_at_1080")],
                        "ef53",
                        "{name}: has the magic but did not open"
                    );
                }
            } else if let Some(e) = &w.open_error {
                // Impossible geometry: the message names the field.
                assert!(e.contains("superblock"), "{name}: {e}");
            } else {
                opened += 1;
            }
            // Where dumpe2fs reads the image, info and groups say what it
            // says: it reads the disk as it is, so they do not replay.
            if w.facts.is_some() && dumpe2fs {
                let image = path.to_str().unwrap();
                if dumpe2fs_ok(&["-h", image]) {
                    super::info::check_info_with(tmp.path(), image, image, None, &["--no-replay"]);
                    info_checked += 1;
                }
                if dumpe2fs_ok(&[image]) {
                    super::info::check_groups_args(
                        tmp.path(),
                        image,
                        image,
                        false,
                        &["--no-replay"],
                    );
                    groups_checked += 1;
                }
            }
            if let (Some(facts), true) = (&w.facts, single) {
                if cols[col("dumpe2fs_magic")] == "ok" && cols[col("dumpe2fs_rc")] == "0" {
                    let theirs = ["fs_features", "block_size", "block_count", "inode_count"]
                        .map(|c| cols[col(c)].to_owned());
                    assert_eq!(
                        facts, &theirs,
                        "{name}: features, block size, blocks, inodes"
                    );
                }
            }
            if single {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    assert!(total >= 236, "only {total} corpus images");
    assert!(opened >= 200, "only {opened} of {total} opened");
    if dumpe2fs {
        assert!(
            info_checked >= 150,
            "only {info_checked} images compared with dumpe2fs -h"
        );
        assert!(
            groups_checked >= 100,
            "only {groups_checked} images compared with dumpe2fs"
        );
    }
    eprintln!(
        "corpus: {total} images, {opened} opened, {not_ext} not ext, {inodes} inodes walked, {problems} problems reported; info equal to dumpe2fs -h on {info_checked}, groups to dumpe2fs on {groups_checked}; slowest {} in {:?}",
        slowest.1, slowest.0
    );
}

/// Where layerscope finds nothing wrong with an inode of a corpus image,
/// `stat` starts with exactly debugfs stat's lines, and `cat` and `blocks`
/// equal debugfs `dump` and `blocks` (a sample of each image's inodes).
/// Where it does find damage, it reads on where debugfs stops; that is
/// what the walk above exercises.
#[test]
fn corpus_inodes_equal_debugfs_where_sound() {
    let Some(corpus) = corpus() else { return };
    if !need("debugfs") {
        return;
    }
    let dir = corpus.join("e2fsprogs");
    let tmp = tempfile::tempdir().unwrap();
    let (mut compared, mut damaged) = (0, 0);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".img.gz"))
        .collect();
    files.sort();
    for file in files {
        for path in images(&dir, &file, tmp.path()) {
            recovered(&path);
            let image = path.to_str().unwrap();
            // Plain `ls -R` reads only directory inodes (entry types):
            // it too must end cleanly on damaged images.
            let plain = layerscope(tmp.path(), &["ls", "-R", image]);
            assert!(
                matches!(plain.code, 0 | 1) && !plain.stderr.contains("panicked"),
                "{file}: ls -R: {}",
                plain.stderr
            );
            let run = layerscope(tmp.path(), &["ls", "-R", "--json", image]);
            if run.code != 0 {
                continue;
            }
            let listing = run.json();
            let mut seen = std::collections::HashSet::new();
            // (inode, its `stat --json`) of up to 12 inodes layerscope
            // reads without a problem.
            let mut picked = Vec::new();
            for e in listing["entries"].as_array().unwrap() {
                let ino = e["inode"].as_u64().unwrap();
                if !seen.insert(ino) || seen.len() > 12 {
                    continue;
                }
                let s = layerscope(tmp.path(), &["stat", "--json", image, &format!("<{ino}>")]);
                if s.code != 0 {
                    continue;
                }
                let s = s.json();
                if !s["problems"].as_array().unwrap().is_empty() {
                    damaged += 1;
                    continue;
                }
                // debugfs 1.47 prints the whole inline data of a symlink,
                // not i_size bytes.
                if s["type"] == "symlink" && s["inline_data_size"].is_u64() {
                    continue;
                }
                picked.push((ino, s));
            }
            // All of debugfs's answers for the image from one process.
            let dump_of = |ino: u64| tmp.path().join(format!("dump-{ino}.out"));
            let stat = |ino: u64| format!("stat <{ino}>");
            let blocks = |ino: u64| format!("blocks <{ino}>");
            let dump = |ino: u64| format!("dump <{ino}> {}", dump_of(ino).display());
            let mut requests = Vec::new();
            for (ino, s) in &picked {
                requests.push(stat(*ino));
                if s["type"] == "regular" {
                    let _ = std::fs::remove_file(dump_of(*ino));
                    requests.extend([dump(*ino), blocks(*ino)]);
                }
            }
            let answers = super::files::debugfs_batch(tmp.path(), image, &requests);
            for (ino, s) in &picked {
                let ino = *ino;
                // debugfs prints nothing for inodes it cannot read.
                let Some(raw) = answers.get(&stat(ino)).filter(|a| !a.is_empty()) else {
                    continue;
                };
                let json = super::files::check_stat_against(tmp.path(), image, ino, raw);
                assert_eq!(&json, s, "{file}: stat --json of inode {ino} twice");
                if s["type"] == "regular" {
                    let dumped = std::fs::read(dump_of(ino)).unwrap();
                    let _ = std::fs::remove_file(dump_of(ino));
                    let theirs = answers
                        .get(&blocks(ino))
                        .map(|b| String::from_utf8_lossy(b));
                    super::files::check_content_against(
                        tmp.path(),
                        image,
                        ino,
                        &file,
                        dumped,
                        theirs.as_deref().unwrap_or_default(),
                        &json,
                    );
                }
                compared += 1;
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    eprintln!("corpus: {compared} inodes equal to debugfs, {damaged} with damage shown");
    assert!(compared >= 900, "only {compared} inodes compared");
}
