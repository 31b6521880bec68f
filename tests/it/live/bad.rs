//! Damaged journals: the kernel-written dirty journal of layer 2 (three
//! transactions, checksum v3, a revoke block) edited on a flat copy, each
//! edit's checksums recomputed so that only the damage meant is there;
//! and the e2fsprogs corpus's journal images. Oracles: e2fsck's own
//! recovery (the same algorithm as the kernel's) where it has an answer;
//! elsewhere the note, no panic and a bounded run.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use layerscope::fs::ext::checksum::crc32c_raw;

use super::{live, Live};
use crate::ext::files::check_files;
use crate::util::*;

/// A flat copy of layer 2 to damage, and where its journal's blocks are.
struct Victim {
    path: PathBuf,
    /// Physical block of each journal block.
    blocks: Vec<u64>,
    bs: u64,
}

impl Victim {
    fn new(l: &Live, dir: &Path, name: &str) -> Victim {
        let path = dir.join(name);
        std::fs::copy(l.flat(&l.main[2], false), &path).unwrap();
        let out = sh(
            dir,
            &["debugfs", "-R", "blocks <8>", path.to_str().unwrap()],
        );
        let blocks = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|b| b.parse().unwrap())
            .collect();
        Victim {
            path,
            blocks,
            bs: 4096,
        }
    }

    fn at(&self, jblock: u64) -> u64 {
        self.blocks[jblock as usize] * self.bs
    }

    fn read(&self, jblock: u64) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&self.path).unwrap();
        let mut b = vec![0u8; self.bs as usize];
        f.read_exact_at(&mut b, self.at(jblock)).unwrap();
        b
    }

    fn write(&self, jblock: u64, b: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        f.write_all_at(b, self.at(jblock)).unwrap();
    }

    fn name(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn journal(&self, dir: &Path) -> Value {
        run_bounded(dir, &["journal", "--json", self.name()]).json()
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The checksum seed of the journal (crc32c of its UUID).
fn seed(sb: &[u8]) -> u32 {
    crc32c_raw(!0, &sb[0x30..0x40])
}

/// Recomputes the tail checksum of a descriptor or revoke block (v3).
fn fix_tail(sb: &[u8], b: &mut [u8]) {
    let n = b.len();
    b[n - 4..].fill(0);
    let c = crc32c_raw(seed(sb), b);
    b[n - 4..].copy_from_slice(&c.to_be_bytes());
}

/// Runs layerscope, failing if it takes more than a minute.
fn run_bounded(dir: &Path, args: &[&str]) -> Run {
    let start = Instant::now();
    let r = layerscope(dir, args);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{args:?} took {:?}",
        start.elapsed()
    );
    assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    r
}

/// The journal's transactions as listed: (sequence, commit block,
/// descriptor blocks, revoke blocks).
/// (sequence, commit block, descriptor blocks, revoke blocks).
type Txn = (u64, Option<u64>, Vec<u64>, Vec<u64>);

fn layout(j: &Value) -> Vec<Txn> {
    j["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["sequence"].as_u64().unwrap(),
                t["commit"]["journal_block"].as_u64(),
                t["descriptors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["journal_block"].as_u64().unwrap())
                    .collect(),
                t["revokes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["journal_block"].as_u64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

/// A commit block with a bad checksum in the middle of the log: replay
/// stops before it, as e2fsck's (and the kernel's) recovery does, and
/// says the kernel would then refuse to mount.
#[test]
fn bad_commit_checksum_mid_journal() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let v = Victim::new(l, d.path(), "badcommit.raw");
    let before = layout(&v.journal(d.path()));
    assert!(before.len() >= 3, "{before:?}");
    let (seq, commit, _, _) = before[1].clone();
    let mut b = v.read(commit.unwrap());
    b[0x100] ^= 0xff;
    v.write(commit.unwrap(), &b);
    let j = v.journal(d.path());
    assert_eq!(
        j["recovery"]["transactions_replayed"], 1,
        "{}",
        j["recovery"]
    );
    assert_eq!(j["recovery"]["outcome"]["state"], "replayed_then_refused");
    let notes = j["recovery"]["notes"].to_string();
    assert!(notes.contains(&format!("transaction {seq}")), "{notes}");
    let ls = run_bounded(d.path(), &["ls", v.name()]);
    assert!(ls.stderr.contains("refuse to mount"), "{}", ls.stderr);
    // e2fsck's recovery stops at the same place.
    let fixed = d.path().join("badcommit.e2fsck.raw");
    std::fs::copy(&v.path, &fixed).unwrap();
    let _ = std::process::Command::new("e2fsck")
        .args(["-y", "-E", "journal_only", fixed.to_str().unwrap()])
        .output()
        .unwrap();
    check_files(d.path(), v.name(), fixed.to_str().unwrap());
}

/// A log that comes back to its start without ending (s_first = s_start
/// = the last block, holding a revoke block of the expected transaction:
/// the kernel would read it forever): the walk stops after one round.
#[test]
fn transaction_loop_is_bounded() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let v = Victim::new(l, d.path(), "loop.raw");
    let mut sb = v.read(0);
    let maxlen = be32(&sb, 0x10);
    let seq = be32(&sb, 0x18);
    let last = maxlen - 1;
    sb[0x14..0x18].copy_from_slice(&last.to_be_bytes());
    sb[0x1c..0x20].copy_from_slice(&last.to_be_bytes());
    sb[0xfc..0x100].fill(0);
    let c = crc32c_raw(!0, &sb[..1024]);
    sb[0xfc..0x100].copy_from_slice(&c.to_be_bytes());
    v.write(0, &sb);
    let mut r = vec![0u8; 4096];
    r[0..4].copy_from_slice(&0xc03b_3998u32.to_be_bytes());
    r[4..8].copy_from_slice(&5u32.to_be_bytes());
    r[8..12].copy_from_slice(&seq.to_be_bytes());
    r[12..16].copy_from_slice(&16u32.to_be_bytes());
    fix_tail(&sb, &mut r);
    v.write(u64::from(last), &r);
    let j = v.journal(d.path());
    assert_eq!(
        j["recovery"]["log_end"]["reason"], "loop",
        "{}",
        j["recovery"]
    );
    assert_eq!(j["recovery"]["transactions_replayed"], 0);
    assert!(j["recovery"]["notes"].to_string().contains("came round"));
    run_bounded(d.path(), &["ls", "-R", v.name()]).ok();
}

/// A tag naming a block past the filesystem: not written, said so; the
/// rest replays.
#[test]
fn descriptor_tag_outside_the_filesystem() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let v = Victim::new(l, d.path(), "outside.raw");
    let sb = v.read(0);
    let before = v.journal(d.path());
    let replayed = before["recovery"]["blocks_replayed"].as_u64().unwrap();
    let desc = layout(&before)[0].2[0];
    let mut b = v.read(desc);
    b[12..16].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
    fix_tail(&sb, &mut b);
    v.write(desc, &b);
    let j = v.journal(d.path());
    let notes = j["recovery"]["notes"].to_string();
    assert!(notes.contains("outside the filesystem"), "{notes}");
    let fates: Vec<&Value> = j["transactions"][0]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["fate"])
        .collect();
    assert_eq!(fates[0], "outside_filesystem");
    // The same block may be logged again later: at most one fewer.
    let now = j["recovery"]["blocks_replayed"].as_u64().unwrap();
    assert!(
        now + 1 >= replayed && now <= replayed,
        "{now} vs {replayed}"
    );
    run_bounded(d.path(), &["ls", "-R", v.name()]).ok();
}

/// A revoke block whose count runs past the block: the kernel's recovery
/// fails (EINVAL) before replaying anything, so the view is the disk's.
#[test]
fn revoke_count_past_its_block() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let v = Victim::new(l, d.path(), "rcount.raw");
    let sb = v.read(0);
    let revoke = layout(&v.journal(d.path()))
        .iter()
        .find_map(|t| t.3.first().copied())
        .expect("layer 2's rm -rf of a journaled directory wrote a revoke block");
    let mut b = v.read(revoke);
    b[12..16].copy_from_slice(&5000u32.to_be_bytes());
    fix_tail(&sb, &mut b);
    v.write(revoke, &b);
    let j = v.journal(d.path());
    assert_eq!(
        j["recovery"]["outcome"]["state"], "failed",
        "{}",
        j["recovery"]
    );
    assert!(j["recovery"]["outcome"]["why"]
        .as_str()
        .unwrap()
        .contains("more than its block holds"));
    let ls = run_bounded(d.path(), &["ls", v.name()]);
    assert!(ls.stderr.contains("recovery fails"), "{}", ls.stderr);
    // Nothing replayed: what debugfs reads without replaying.
    check_files(d.path(), v.name(), v.name());
}

/// Holes in the journal inode: a data block of the first transaction
/// (not written, the mount refused), then the first descriptor (the scan
/// fails: nothing replayed).
#[test]
fn journal_inode_with_holes() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let v = Victim::new(l, d.path(), "holes.raw");
    let t0 = layout(&v.journal(d.path()))[0].clone();
    let data = t0.2[0] + 1;
    sh(
        d.path(),
        &[
            "debugfs",
            "-w",
            "-R",
            &format!("punch <8> {data} {data}"),
            v.name(),
        ],
    );
    let j = v.journal(d.path());
    assert_eq!(
        j["recovery"]["outcome"]["state"], "replayed_then_refused",
        "{}",
        j["recovery"]
    );
    assert_eq!(j["transactions"][0]["blocks"][0]["fate"], "unreadable");
    assert!(
        j["recovery"]["notes"].to_string().contains("hole"),
        "{}",
        j["recovery"]["notes"]
    );
    run_bounded(d.path(), &["ls", "-R", v.name()]).ok();
    let desc = t0.2[0];
    sh(
        d.path(),
        &[
            "debugfs",
            "-w",
            "-R",
            &format!("punch <8> {desc} {desc}"),
            v.name(),
        ],
    );
    let j = v.journal(d.path());
    assert_eq!(
        j["recovery"]["outcome"]["state"], "failed",
        "{}",
        j["recovery"]
    );
    let ls = run_bounded(d.path(), &["ls", v.name()]);
    assert!(ls.stderr.contains("recovery fails"), "{}", ls.stderr);
}

/// Recomputes the journal superblock's checksum (v2/v3).
fn fix_sb(sb: &mut [u8]) {
    sb[0xfc..0x100].fill(0);
    let c = crc32c_raw(!0, &sb[..1024]);
    sb[0xfc..0x100].copy_from_slice(&c.to_be_bytes());
}

/// Transaction numbers that wrap past 2^32 (the log renumbered from
/// 0xffffffff: s_sequence, every descriptor, commit and revoke block, and
/// the data tags' checksums, which cover the sequence): replayed as
/// e2fsck's recovery replays it, every transaction listed in order.
#[test]
fn sequence_wrap_replays_like_e2fsck() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let v = Victim::new(l, d.path(), "wrap.raw");
    let mut sb = v.read(0);
    let before = v.journal(d.path());
    let txns = layout(&before);
    assert!(txns.len() >= 3, "{txns:?}");
    let first = be32(&sb, 0x18);
    let renumber = |s: u64| (s as u32).wrapping_sub(first).wrapping_add(0xffff_ffff);
    sb[0x18..0x1c].copy_from_slice(&renumber(u64::from(first)).to_be_bytes());
    fix_sb(&mut sb);
    v.write(0, &sb);
    for (t, (seq, commit, descs, revokes)) in
        before["transactions"].as_array().unwrap().iter().zip(&txns)
    {
        let new = renumber(*seq).to_be_bytes();
        let data: Vec<u64> = t["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["journal_block"].as_u64().unwrap())
            .collect();
        let mut data = data.into_iter();
        for &jb in descs {
            let mut b = v.read(jb);
            b[8..12].copy_from_slice(&new);
            // Tags (checksum v3: 16 bytes, then a UUID unless SAME_UUID).
            let mut pos = 12;
            while pos + 16 <= b.len() - 4 {
                let flags = be32(&b, pos + 4);
                let block = v.read(data.next().expect("a data block per tag"));
                let c = crc32c_raw(crc32c_raw(seed(&sb), &new), &block);
                b[pos + 12..pos + 16].copy_from_slice(&c.to_be_bytes());
                pos += 16 + if flags & 2 == 0 { 16 } else { 0 };
                if flags & 8 != 0 {
                    break;
                }
            }
            fix_tail(&sb, &mut b);
            v.write(jb, &b);
        }
        for &jb in revokes {
            let mut b = v.read(jb);
            b[8..12].copy_from_slice(&new);
            fix_tail(&sb, &mut b);
            v.write(jb, &b);
        }
        if let Some(jb) = commit {
            let mut b = v.read(*jb);
            b[8..12].copy_from_slice(&new);
            b[0x10..0x14].fill(0);
            let c = crc32c_raw(seed(&sb), &b);
            b[0x10..0x14].copy_from_slice(&c.to_be_bytes());
            v.write(*jb, &b);
        }
    }
    let j = v.journal(d.path());
    let seqs: Vec<u64> = layout(&j).iter().map(|t| t.0).collect();
    let want: Vec<u64> = txns.iter().map(|t| u64::from(renumber(t.0))).collect();
    assert_eq!(seqs, want);
    assert_eq!(want[0], 0xffff_ffff);
    assert_eq!(
        j["recovery"]["transactions_replayed"], before["recovery"]["transactions_replayed"],
        "{}",
        j["recovery"]
    );
    assert_eq!(
        j["recovery"]["blocks_replayed"],
        before["recovery"]["blocks_replayed"]
    );
    // e2fsck's recovery (the kernel's algorithm) on a copy is the oracle.
    let fixed = d.path().join("wrap.e2fsck.raw");
    std::fs::copy(&v.path, &fixed).unwrap();
    let out = std::process::Command::new("e2fsck")
        .args(["-y", "-E", "journal_only", fixed.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.code().unwrap_or(8) < 4, "{out:?}");
    check_files(d.path(), v.name(), fixed.to_str().unwrap());
}

/// A journal superblock claiming 2^32 - 1 blocks: the kernel cannot load
/// it; the walk costs what the journal really holds, the refusal names
/// the field and where the superblock is, and the view is the disk's.
#[test]
fn journal_of_2_32_blocks_claimed() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let v = Victim::new(l, d.path(), "huge.raw");
    let mut sb = v.read(0);
    sb[0x10..0x14].copy_from_slice(&u32::MAX.to_be_bytes());
    fix_sb(&mut sb);
    v.write(0, &sb);
    let j = v.journal(d.path());
    assert_eq!(
        j["recovery"]["outcome"]["state"], "failed",
        "{}",
        j["recovery"]
    );
    let why = j["recovery"]["outcome"]["why"].as_str().unwrap();
    assert!(why.contains("4294967295 blocks (s_maxlen)"), "{why}");
    let at = v.at(0);
    assert!(
        why.contains(&format!("journal superblock at byte {at:#x}")),
        "{why}"
    );
    let ls = run_bounded(d.path(), &["ls", "-R", v.name()]);
    assert!(ls.stderr.contains("recovery fails"), "{}", ls.stderr);
    check_files(d.path(), v.name(), v.name());
}

/// Our view of `image` in debugfs's terms: every path with its inode,
/// mode, owner, link count and bytes.
fn our_tree(
    dir: &Path,
    image: &str,
) -> Option<std::collections::BTreeMap<String, super::diff::Seen>> {
    let r = layerscope(dir, &["ls", "-R", "--json", image, "/"]);
    if r.code != 0 {
        return None;
    }
    let mut out = std::collections::BTreeMap::new();
    for e in r.json()["entries"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        if name == "." || name == ".." {
            continue;
        }
        let dir_path = e["dir"].as_str().unwrap().trim_end_matches('/');
        let path = format!("{dir_path}/{name}");
        let ino = e["inode"].as_u64().unwrap();
        let mode = e["mode"].as_u64().unwrap() as u32;
        let body = if mode & 0o170000 == 0o100000 {
            layerscope(dir, &["cat", image, &format!("<{ino}>")]).stdout
        } else {
            Vec::new()
        };
        out.insert(
            path,
            super::diff::Seen {
                ino,
                mode,
                uid: e["uid"].as_u64().unwrap() as u32,
                gid: e["gid"].as_u64().unwrap() as u32,
                links: e["links"].as_u64().unwrap() as u32,
                body,
            },
        );
    }
    Some(out)
}

/// The e2fsprogs test images with journals (checksum v2 and v3, 32- and
/// 64-bit, corrupt commits, descriptors, revoke blocks, superblocks):
/// where e2fsck's journal-only run leaves a filesystem debugfs can walk,
/// the replayed view holds the same paths, inodes, modes, owners and
/// bytes; a fast-commit journal (replayed by e2fsck, listed by
/// layerscope) is only listed. No panic, no hang on any.
#[test]
fn corpus_journals_replay_like_e2fsck() {
    let Some(corpus) = corpus() else { return };
    if !need("e2fsck") || !need("debugfs") {
        return;
    }
    let dir = corpus.join("e2fsprogs");
    let tmp = tempfile::tempdir().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.starts_with("j_") && !f.ends_with(".tar.bz2"))
        .collect();
    files.sort();
    let (mut compared, mut replayed) = (0, 0);
    for file in &files {
        for image in crate::ext::corpus::images(&dir, file, tmp.path()) {
            let name = image.to_str().unwrap().to_owned();
            let j = run_bounded(tmp.path(), &["journal", "--json", &name]);
            if j.code != 0 {
                continue;
            }
            let j = j.json();
            if j["fast_commit"]["valid_records"].as_u64().unwrap_or(0) > 0 {
                continue;
            }
            if j["recovery"]["transactions_replayed"].as_u64().unwrap_or(0) > 0 {
                replayed += 1;
            }
            let fixed = tmp.path().join("fixed.raw");
            std::fs::copy(&image, &fixed).unwrap();
            let _ = std::process::Command::new("e2fsck")
                .args(["-y", "-E", "journal_only", fixed.to_str().unwrap()])
                .output()
                .unwrap();
            let walks = std::process::Command::new("debugfs")
                .args(["-R", "ls -l /", fixed.to_str().unwrap()])
                .output()
                .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
            let Some(ours) = our_tree(tmp.path(), &name) else {
                continue;
            };
            if !walks {
                continue;
            }
            let theirs = super::diff::tree(tmp.path(), fixed.to_str().unwrap());
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                theirs.keys().collect::<Vec<_>>(),
                "{file}: paths after replay"
            );
            for (p, o) in &ours {
                let t = &theirs[p];
                assert_eq!(
                    (o.ino, o.mode, o.uid, o.gid, o.links),
                    (t.ino, t.mode, t.uid, t.gid, t.links),
                    "{file}: {p}"
                );
                if o.mode & 0o170000 == 0o100000 {
                    assert!(
                        o.body == t.body,
                        "{file}: {p}: bytes differ from debugfs dump after e2fsck's replay"
                    );
                }
            }
            compared += 1;
        }
    }
    eprintln!(
        "corpus journals: {compared} compared with e2fsck's replay, {replayed} replayed something"
    );
    assert!(
        compared >= 8 && replayed >= 3,
        "{compared} compared, {replayed} replayed"
    );
}
