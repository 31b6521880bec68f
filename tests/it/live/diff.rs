//! Layer diff and blame on kernel-written chains. Oracles: the change log
//! the main script makes (letters per path); a path-by-path comparison of
//! the two layers' trees after e2fsck replayed their journals, as debugfs
//! reads them; and the quick diff against `--full`, line for line, on
//! every pair of layers of every chain (the generated ones included).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::{intended, live, Live};
use crate::util::*;

fn abs(l: &Live, image: &str) -> String {
    l.dir.join(image).to_str().unwrap().to_owned()
}

fn letter(change: &str) -> char {
    match change {
        "added" => 'A',
        "deleted" => 'D',
        "modified" => 'M',
        "moved" => 'R',
        other => panic!("change {other}"),
    }
}

/// (letter, path) of each change (a move's new path).
fn letters(j: &Value) -> BTreeSet<(char, String)> {
    j["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                letter(c["change"].as_str().unwrap()),
                c["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn diff_json(dir: &Path, image: &str, from: usize, to: usize, extra: &[&str]) -> Value {
    let (f, t) = (from.to_string(), to.to_string());
    let mut args = vec!["diff", "--json", image, "--from", &f, "--to", &t];
    args.extend(extra);
    layerscope(dir, &args).ok().json()
}

#[test]
fn letters_are_the_intended_change_log() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let top = abs(l, &l.main[4]);
    for to in 1..=4 {
        let j = diff_json(d.path(), &top, to - 1, to, &[]);
        assert_eq!(
            letters(&j),
            intended(to),
            "diff --from {} --to {to}",
            to - 1
        );
        let c = j["changes"].as_array().unwrap();
        // A package upgrade reads as M lines, replaced.
        let replaced = c.iter().filter(|c| c["replaced"] == true).count();
        assert!(
            replaced >= if to == 3 { 5 } else { 1 },
            "layer {to}: {replaced} replaced"
        );
    }
    // Hard links are named as such, with the other name.
    let j = diff_json(d.path(), &top, 3, 4, &[]);
    let c = j["changes"].as_array().unwrap();
    let find = |p: &str| c.iter().find(|c| c["path"] == p).unwrap().clone();
    assert_eq!(find("/etc/keep-hard")["hard_link"], true);
    assert_eq!(find("/etc/keep-hard")["link_path"], "/etc/keep.conf");
    assert_eq!(find("/home/user/doc-link.txt")["hard_link"], true);
    assert_eq!(
        find("/home/user/doc-link.txt")["link_path"],
        "/home/user/doc.txt"
    );
    // The paths under a moved directory name it.
    assert_eq!(find("/opt/app3/bin/run")["moved_with"], "/opt/app3");
    assert_eq!(find("/opt/app3/bin/run")["from"], "/opt/app2/bin/run");
}

/// A live snapshot's changes belong to its layer: replayed, layer 2's
/// directory move is in 1 -> 2; read as on disk, it only shows up in
/// 2 -> 3, where the kernel checkpointed it.
#[test]
fn live_snapshot_changes_land_on_their_layer() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let top = abs(l, &l.main[4]);
    let moved = ('R', "/usr/share/newpkg2".to_owned());
    assert!(letters(&diff_json(d.path(), &top, 1, 2, &[])).contains(&moved));
    assert!(!letters(&diff_json(d.path(), &top, 2, 3, &[])).contains(&moved));
    assert!(!letters(&diff_json(d.path(), &top, 1, 2, &["--no-replay"])).contains(&moved));
    assert!(letters(&diff_json(d.path(), &top, 2, 3, &["--no-replay"])).contains(&moved));
}

/// The change lines of `diff` (without the summary and notes).
fn change_lines(dir: &Path, image: &str, from: usize, to: usize, extra: &[&str]) -> Vec<String> {
    let (f, t) = (from.to_string(), to.to_string());
    let mut args = vec!["diff", image, "--from", &f, "--to", &t];
    args.extend(extra);
    layerscope(dir, &args)
        .ok()
        .text()
        .lines()
        .take_while(|l| !l.contains(" change(s) from layer "))
        .map(str::to_owned)
        .collect()
}

/// The quick diff equals `--full`, line for line, in path terms (with
/// and without expanded moves) and per inode, between every two layers
/// of the main chain and of each generated chain.
#[test]
fn quick_diff_equals_full_on_every_pair() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for chain in std::iter::once(&l.main).chain(&l.gens) {
        let top = abs(l, chain.last().unwrap());
        for to in 1..chain.len() {
            for from in 0..to {
                for mode in [&[][..], &["--no-expand"], &["--by-inode"]] {
                    let quick = change_lines(d.path(), &top, from, to, mode);
                    let mut full_args = mode.to_vec();
                    full_args.push("--full");
                    let full = change_lines(d.path(), &top, from, to, &full_args);
                    assert_eq!(
                        quick, full,
                        "{top} --from {from} --to {to} {mode:?}: quick vs --full"
                    );
                    if to == from + 1 || from == 0 {
                        let (f, t) = (from.to_string(), to.to_string());
                        for json in [&["--json"][..], &[]] {
                            let mut args = vec!["diff", &top, "--from", &f, "--to", &t];
                            args.extend(mode);
                            args.extend(json);
                            crate::diff::spilled_equals_unspilled(d.path(), &args);
                        }
                    }
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 4 * 10 * 3);
}

/// One path as debugfs reads it from a flat image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub links: u32,
    /// Regular files: the bytes; symlinks: the target.
    pub body: Vec<u8>,
}

/// Every path of `flat` with its inode, mode, owner, link count and bytes,
/// from debugfs (`ls -l` of each directory, `stat` and `dump` of each
/// inode, batched in one debugfs run per level).
pub(super) fn tree(dir: &Path, flat: &str) -> BTreeMap<String, Seen> {
    tree_and_ctimes(dir, flat).0
}

/// [`tree`], and each inode's ctime as debugfs's `stat` prints it
/// (seconds and nanoseconds, raw).
fn tree_and_ctimes(dir: &Path, flat: &str) -> (BTreeMap<String, Seen>, BTreeMap<u64, String>) {
    let run = |cmds: &str| -> String {
        let f = dir.join("cmds");
        std::fs::write(&f, cmds).unwrap();
        let out = sh(dir, &["debugfs", "-f", f.to_str().unwrap(), flat]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut out: BTreeMap<String, Seen> = BTreeMap::new();
    let mut level = vec![("".to_owned(), 2u64)];
    let mut walked = BTreeSet::from([2u64]);
    while !level.is_empty() {
        let cmds: String = level
            .iter()
            .map(|(_, ino)| format!("ls -l <{ino}>\n"))
            .collect();
        let text = run(&cmds);
        // Listings come in order, each after its "debugfs:  ls -l" echo.
        let mut next = Vec::new();
        let mut i = 0usize;
        let mut current: Option<&(String, u64)> = None;
        for line in text.lines() {
            if line.starts_with("debugfs:") {
                current = level.get(i);
                i += 1;
                continue;
            }
            let Some((parent, _)) = current else { continue };
            // inode, mode, (type), uid, gid, size, date, time, name.
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 9 || w[0] == "0" {
                continue;
            }
            let name = w[8..].join(" ");
            if name == "." || name == ".." {
                continue;
            }
            let ino: u64 = w[0].parse().unwrap();
            let mode = u32::from_str_radix(w[1], 8).unwrap();
            let path = format!("{parent}/{name}");
            out.insert(
                path.clone(),
                Seen {
                    ino,
                    mode,
                    uid: w[3].parse().unwrap(),
                    gid: w[4].parse().unwrap(),
                    links: 0,
                    body: Vec::new(),
                },
            );
            // A directory is walked once (a damaged one may list itself).
            if mode & 0o170000 == 0o040000 && walked.insert(ino) {
                next.push((path, ino));
            }
        }
        level = next;
    }
    // Link counts, and the bytes of files and links.
    let inos: BTreeSet<u64> = out.values().map(|s| s.ino).collect();
    let dumps = dir.join("dumps");
    let _ = std::fs::remove_dir_all(&dumps);
    std::fs::create_dir_all(&dumps).unwrap();
    let mut cmds = String::new();
    for ino in &inos {
        cmds += &format!("stat <{ino}>\ndump <{ino}> {}/{ino}\n", dumps.display());
    }
    let text = run(&cmds);
    let mut links = BTreeMap::new();
    let mut ctimes = BTreeMap::new();
    let mut ino = 0u64;
    for line in text.lines() {
        // The echo of each command: "debugfs: stat <N>".
        if let Some(rest) = line
            .strip_prefix("debugfs:")
            .and_then(|r| r.trim_start().strip_prefix("stat <"))
        {
            ino = rest.trim_end_matches('>').parse().unwrap();
        }
        if let Some(t) = line.trim_start().strip_prefix("ctime: ") {
            ctimes.insert(ino, t.split_whitespace().next().unwrap_or("").to_owned());
        }
        if let Some(at) = line.find("Links: ") {
            let n: u32 = line[at + 7..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            links.insert(ino, n);
        }
    }
    for s in out.values_mut() {
        s.links = links.get(&s.ino).copied().unwrap_or(0);
        if s.mode & 0o170000 != 0o040000 {
            s.body = std::fs::read(dumps.join(s.ino.to_string())).unwrap_or_default();
        }
    }
    (out, ctimes)
}

/// What changed between two trees, in path terms.
#[derive(Debug, Default, PartialEq, Eq)]
struct Effects {
    added: BTreeSet<String>,
    deleted: BTreeSet<String>,
    modified: BTreeSet<String>,
}

type Trees = (BTreeMap<String, Seen>, BTreeMap<u64, String>);

fn seen_effects((old, octime): &Trees, (new, nctime): &Trees) -> Effects {
    let mut e = Effects::default();
    for (p, n) in new {
        match old.get(p) {
            None => {
                e.added.insert(p.clone());
            }
            Some(o) => {
                let dir = n.mode & 0o170000 == 0o040000;
                let differs = o.ino != n.ino
                    || o.mode != n.mode
                    || o.uid != n.uid
                    || o.gid != n.gid
                    || (!dir
                        && (o.links != n.links
                            || o.body != n.body
                            || octime.get(&o.ino) != nctime.get(&n.ino)));
                if differs {
                    e.modified.insert(p.clone());
                }
            }
        }
    }
    e.deleted = old
        .keys()
        .filter(|p| !new.contains_key(*p))
        .cloned()
        .collect();
    e
}

fn our_effects(j: &Value) -> Effects {
    let mut e = Effects::default();
    for c in j["changes"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap().to_owned();
        match c["change"].as_str().unwrap() {
            "added" => e.added.insert(path),
            "deleted" => e.deleted.insert(path),
            "modified" => e.modified.insert(path),
            _ => {
                e.deleted.insert(c["from"].as_str().unwrap().to_owned());
                e.added.insert(path)
            }
        };
    }
    e
}

/// `diff` between two layers equals the path-by-path comparison of their
/// trees after e2fsck replayed each one's journal, on every step of every
/// chain.
#[test]
fn diff_equals_the_replayed_trees_compared_path_by_path() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    for chain in std::iter::once(&l.main).chain(&l.gens) {
        let top = abs(l, chain.last().unwrap());
        let trees: Vec<Trees> = chain
            .iter()
            .map(|image| tree_and_ctimes(d.path(), l.flat(image, true).to_str().unwrap()))
            .collect();
        for to in 1..chain.len() {
            let theirs = seen_effects(&trees[to - 1], &trees[to]);
            let ours = our_effects(&diff_json(d.path(), &top, to - 1, to, &[]));
            assert_eq!(
                ours,
                theirs,
                "{top} --from {} --to {to}: diff vs debugfs",
                to - 1
            );
        }
    }
}

/// blame in path terms: a replaced file keeps its path's history, a path
/// under a moved directory was created by the move, a directory changed
/// in a live snapshot is served by that layer's journal.
#[test]
fn blame_follows_paths_and_journals() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let top = abs(l, &l.main[4]);
    let j = layerscope(d.path(), &["blame", "-R", "--json", &top, "/"])
        .ok()
        .json();
    let all = j.as_array().unwrap();
    let get = |p: &str| {
        all.iter()
            .find(|b| b["path"] == p)
            .unwrap_or_else(|| panic!("{p} not blamed"))
            .clone()
    };
    // Replaced in layer 1, the path is the base's.
    let lib = get("/usr/lib/pkg/lib00.so");
    assert_eq!(
        (lib["content_layer"].as_u64(), lib["created_layer"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(lib["replaced_in"], serde_json::json!([1]));
    // Replaced in layers 1 and 4.
    let tool = get("/usr/bin/tool1");
    assert_eq!(tool["content_layer"], 4);
    assert_eq!(tool["replaced_in"], serde_json::json!([4, 1]));
    // Moved with its directory in layer 4, unchanged since the base.
    let run = get("/opt/app3/bin/run");
    assert_eq!(
        (run["content_layer"].as_u64(), run["created_layer"].as_u64()),
        (Some(0), Some(4))
    );
    // Made in the live snapshot of layer 2 (replayed), moved there too.
    let readme = get("/usr/share/newpkg2/README");
    assert_eq!(
        (
            readme["content_layer"].as_u64(),
            readme["created_layer"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let new = get("/l4/a");
    assert_eq!(
        (new["content_layer"].as_u64(), new["created_layer"].as_u64()),
        (Some(4), Some(4))
    );
    // /l4's directory block is only in layer 4's journal.
    let dir = get("/l4");
    let shares = dir["layers"].as_array().unwrap();
    assert!(
        shares
            .iter()
            .any(|s| s["journal"] == true && s["layer"] == 4),
        "{shares:?}"
    );
    let text = layerscope(d.path(), &["blame", &top, "/l4"]).ok().text();
    assert!(text.contains("j4:"), "{text}");
    let text = layerscope(d.path(), &["blame", &top, "/etc/keep.conf"])
        .ok()
        .text();
    assert!(text.contains("base"), "{text}");
}
