//! `diff` of a mass create and of a mass delete (issue 19): thousands of
//! files created (or deleted) in the top overlay, most in a new (or
//! removed) tree, some in existing directories. The oracle is the list of
//! paths given to debugfs, which made (or removed) them: every one is
//! listed as added (or deleted), and nothing else is. The names of new
//! and deleted files stream ([`layerscope::diff::quick::Part::Added`],
//! [`layerscope::diff::quick::Part::Deleted`]), so the peak memory of
//! `diff --json` stays flat in the number of files created or deleted.
use std::collections::BTreeSet;
use std::path::Path;

use crate::diff::spilled_equals_unspilled;
use crate::util::*;

/// The directories and files a mass create of `n` files makes, in the
/// order debugfs makes them: `/new`, `/new/dNNNN` of 200 files each, and
/// every 100th file in an existing directory `/base/dK` instead (what
/// bench/bench.py's `mass_created` makes).
fn created(n: usize) -> (Vec<String>, Vec<String>) {
    let dirs = std::iter::once("/new".to_owned())
        .chain((0..n.div_ceil(200)).map(|k| format!("/new/d{k:04}")))
        .collect();
    let files = (0..n)
        .map(|i| {
            if i % 100 == 99 {
                format!("/base/d{}/m{i:06}", i % 10)
            } else {
                format!("/new/d{:04}/f{i:06}", i / 200)
            }
        })
        .collect();
    (dirs, files)
}

/// `flat.raw` (256 MiB ext4 made by mke2fs -d, room for `n` + 2,000
/// inodes) and `base.qcow2` (its qcow2 copy) in `dir`, from a tree of 10
/// directories of 5 small files `/base/dK/bJ` and what `more` adds to it.
fn base_image(dir: &Path, n: usize, more: impl FnOnce(&Path)) {
    let tree = dir.join("tree");
    for k in 0..10 {
        let d = tree.join("base").join(format!("d{k}"));
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..5 {
            std::fs::write(d.join(format!("b{j}")), vec![b'a' + j as u8; 100 * j]).unwrap();
        }
    }
    more(&tree);
    let inodes = (n + 2000).to_string();
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-N",
            &inodes,
            "-d",
            "tree",
            "-E",
            "root_owner=0:0",
            "flat.raw",
            "256M",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "flat.raw",
            "base.qcow2",
        ],
    );
}

/// `mass.qcow2` over `base.qcow2` in `dir`: a base of 10 directories of 5
/// files, and an overlay where debugfs created `n` files (every 16th with
/// 3,000 bytes). Returns the created paths (directories first).
fn build(dir: &Path, n: usize) -> Vec<String> {
    base_image(dir, n, |_| {});
    std::fs::write(dir.join("payload"), vec![7u8; 3000]).unwrap();
    let (dirs, files) = created(n);
    let mut cmds = String::new();
    for d in &dirs {
        cmds.push_str(&format!("mkdir {d}\n"));
    }
    for (i, f) in files.iter().enumerate() {
        let src = if i % 16 == 0 { "payload" } else { "/dev/null" };
        cmds.push_str(&format!("write {src} {f}\n"));
    }
    debugfs_w(dir, "flat.raw", &cmds);
    thin_overlay(
        dir,
        "mass.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("flat.raw"),
        "",
        false,
    );
    dirs.into_iter().chain(files).collect()
}

/// Every created path is an added change, and nothing else changed
/// (the quick diff, the full walk, text and JSON, in memory and spilled
/// through temporary files).
#[test]
fn diff_names_every_file_created() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let made = build(dir, 3000);
    let want: BTreeSet<(char, String)> = made.iter().map(|p| ('A', p.clone())).collect();
    let quick = layerscope(dir, &["diff", "--json", "mass.qcow2"])
        .ok()
        .json();
    assert_eq!(crate::diff::changes(&quick), want);
    let list = quick["changes"].as_array().unwrap();
    assert_eq!(list.len(), made.len(), "each path once");
    assert!(list.iter().all(|c| c["hard_link"].is_null()));
    let full = layerscope(dir, &["diff", "--json", "--full", "mass.qcow2"])
        .ok()
        .json();
    assert_eq!(full["changes"], quick["changes"]);
    for args in [
        &["diff", "--json", "mass.qcow2"][..],
        &["diff", "mass.qcow2"],
    ] {
        spilled_equals_unspilled(dir, args);
    }
}

/// The peak memory of `diff --json` of 60,000 files created stays far
/// below what holding them costs (~70 MiB before the names streamed, at
/// this size; 206 MiB at 200,000 files), in a child process (GNU time's
/// peak), and every created path is in the output.
#[test]
fn diff_json_of_a_mass_create_keeps_memory_flat() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    const N: usize = 60_000;
    const MAX_KIB: u64 = 48 << 10;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let made = build(dir, N);
    let run = crate::hostile::run(dir, &["diff", "--json", "mass.qcow2"], b"\"added\"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count, made.len() as u64, "added changes");
    eprintln!(
        "diff --json of {N} files created: peak RSS {} KiB",
        run.peak_kib
    );
    assert!(
        run.peak_kib < MAX_KIB,
        "peak RSS {} KiB at {N} files created (bound {MAX_KIB} KiB)",
        run.peak_kib
    );
}

/// `gone.qcow2` over `base.qcow2` in `dir`: a base holding the tree a
/// mass create of `n` files makes ([`created`]) besides 10 directories of
/// 5 files, and an overlay where debugfs removed every created file and
/// directory, and `/new`, `/new/d0000` and its first `again` files are
/// there anew (new inodes at paths that lost theirs: replaced paths, each
/// side among the names that stream). Returns the removed paths (directories
/// first) and the paths made anew.
fn build_delete(dir: &Path, n: usize, again: usize) -> (Vec<String>, Vec<String>) {
    let (dirs, files) = created(n);
    base_image(dir, n, |tree| {
        for d in &dirs {
            std::fs::create_dir_all(tree.join(&d[1..])).unwrap();
        }
        for (i, f) in files.iter().enumerate() {
            let body = if i % 16 == 0 {
                vec![7u8; 3000]
            } else {
                Vec::new()
            };
            std::fs::write(tree.join(&f[1..]), body).unwrap();
        }
    });
    // The files made anew are made first, under another name, and linked
    // into place once the old tree is gone: debugfs gives a new file the
    // lowest free inode and generation 0, so one made after the deletes
    // would take a deleted file's inode and be that file, moved.
    let anew: Vec<String> = if again == 0 {
        Vec::new()
    } else {
        ["/new", "/new/d0000"]
            .into_iter()
            .map(str::to_owned)
            .chain(
                files
                    .iter()
                    .filter(|f| f.starts_with("/new/d0000/"))
                    .take(again)
                    .cloned(),
            )
            .collect()
    };
    std::fs::write(dir.join("payload"), vec![9u8; 100]).unwrap();
    let mut cmds = String::new();
    for p in &anew {
        let tmp = p.replacen("/new", "/tmpnew", 1);
        if p.contains("/f") {
            cmds.push_str(&format!("write payload {tmp}\n"));
        } else {
            cmds.push_str(&format!("mkdir {tmp}\n"));
        }
    }
    for f in &files {
        cmds.push_str(&format!("rm {f}\n"));
    }
    for d in dirs.iter().rev() {
        cmds.push_str(&format!("rmdir {d}\n"));
    }
    if again > 0 {
        cmds.push_str("ln /tmpnew /new\nunlink /tmpnew\n");
    }
    debugfs_w(dir, "flat.raw", &cmds);
    thin_overlay(
        dir,
        "gone.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("flat.raw"),
        "",
        false,
    );
    (dirs.into_iter().chain(files).collect(), anew)
}

/// Every removed path is a deleted change, every path made anew one
/// change (a replaced path: `M`), and nothing else changed; the quick
/// diff and the full walk agree, in text and JSON, in memory and spilled
/// through temporary files. debugfs's own listing of the top says the
/// tree is gone (what the oracle's commands did).
#[test]
fn diff_names_every_file_deleted() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (gone, anew) = build_delete(dir, 3000, 20);
    let ls = sh(dir, &["debugfs", "-R", "ls -p /new/d0000", "flat.raw"]).stdout;
    let ls = String::from_utf8_lossy(&ls);
    assert_eq!(
        ls.lines().filter(|l| l.contains("/f0")).count(),
        20,
        "debugfs: /new/d0000 holds the files made anew\n{ls}"
    );
    let anew_set: BTreeSet<&String> = anew.iter().collect();
    let want: BTreeSet<(char, String)> = gone
        .iter()
        .map(|p| {
            let k = if anew_set.contains(p) { 'M' } else { 'D' };
            (k, p.clone())
        })
        .collect();
    let quick = layerscope(dir, &["diff", "--json", "gone.qcow2"])
        .ok()
        .json();
    let got = crate::diff::changes(&quick);
    let extra: Vec<_> = got.difference(&want).take(10).collect();
    let missing: Vec<_> = want.difference(&got).take(10).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "listed, not made: {extra:?}\nmade, not listed: {missing:?}"
    );
    let list = quick["changes"].as_array().unwrap();
    assert_eq!(list.len(), gone.len(), "each path once");
    assert!(list
        .iter()
        .filter(|c| c["change"] == "modified")
        .all(|c| c["replaced"] == true));
    let full = layerscope(dir, &["diff", "--json", "--full", "gone.qcow2"])
        .ok()
        .json();
    assert_eq!(full["changes"], quick["changes"]);
    for args in [
        &["diff", "--json", "gone.qcow2"][..],
        &["diff", "gone.qcow2"],
    ] {
        spilled_equals_unspilled(dir, args);
    }
}

/// The peak memory of `diff --json` of 60,000 files deleted stays far
/// below what holding their names costs, in a child process (GNU time's
/// peak), and every deleted path is in the output.
#[test]
fn diff_json_of_a_mass_delete_keeps_memory_flat() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    const N: usize = 60_000;
    const MAX_KIB: u64 = 48 << 10;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (gone, _) = build_delete(dir, N, 0);
    let run = crate::hostile::run(dir, &["diff", "--json", "gone.qcow2"], b"\"deleted\"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count, gone.len() as u64, "deleted changes");
    eprintln!(
        "diff --json of {N} files deleted: peak RSS {} KiB",
        run.peak_kib
    );
    assert!(
        run.peak_kib < MAX_KIB,
        "peak RSS {} KiB at {N} files deleted (bound {MAX_KIB} KiB)",
        run.peak_kib
    );
}

/// `diff` of a layer that renamed thousands of directories (each holding
/// a file and a directory), the renames debugfs made (unlink, then link
/// the inode under the new name): every directory is one move, what is
/// under it moved with it, and nothing else changed; the quick diff and
/// the full walk agree. e2fsck finds the renamed image clean. (Each name
/// was matched against every move: 20,000 renamed directories took 46 s
/// to diff; looked up by the name's ancestors, 0.6 s.)
#[test]
fn diff_names_every_directory_renamed() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") || !need("e2fsck") {
        return;
    }
    const N: usize = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for k in 0..N {
        let d = dir.join("tree").join("d").join(format!("dir{k}"));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
    }
    // Without dir_index: debugfs's link does not place a name in an
    // indexed directory's hash order.
    let mke2fs = "mke2fs -q -F -t ext4 -O ^dir_index -b 4096 -N 10000 -d tree -E root_owner=0:0 flat.raw 64M";
    sh(dir, &mke2fs.split(' ').collect::<Vec<_>>());
    sh(
        dir,
        &"qemu-img convert -O qcow2 flat.raw base.qcow2"
            .split(' ')
            .collect::<Vec<_>>(),
    );
    // Each rename: the name goes, then the inode is linked under a name
    // as long (it fits where the old one was).
    let ls = sh(dir, &["debugfs", "-R", "ls -l /d", "flat.raw"]).stdout;
    let mut cmds = String::new();
    let mut want = BTreeSet::new();
    for line in String::from_utf8_lossy(&ls).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(ino), Some(name)) = (words.first(), words.last()) else {
            continue;
        };
        let Some(k) = name.strip_prefix("dir") else {
            continue;
        };
        cmds.push_str(&format!("unlink /d/{name}\nlink <{ino}> /d/mov{k}\n"));
        for p in ["", "/f", "/sub"] {
            want.insert(('R', format!("/d/mov{k}{p}")));
        }
    }
    assert_eq!(want.len(), 3 * N, "debugfs listed every directory");
    debugfs_w(dir, "flat.raw", &cmds);
    sh(dir, &["e2fsck", "-fn", "flat.raw"]);
    thin_overlay(
        dir,
        "moved.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("flat.raw"),
        "",
        false,
    );
    let quick = layerscope(dir, &["diff", "--json", "moved.qcow2"])
        .ok()
        .json();
    assert_eq!(crate::diff::changes(&quick), want);
    for c in quick["changes"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap();
        let was = path.replacen("/d/mov", "/d/dir", 1);
        assert_eq!(c["from"].as_str(), Some(was.as_str()), "{c}");
    }
    let full = layerscope(dir, &["diff", "--json", "--full", "moved.qcow2"])
        .ok()
        .json();
    assert_eq!(full["changes"], quick["changes"]);
}
