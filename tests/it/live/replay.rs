//! The replayed view of kernel-written live snapshots against e2fsck's
//! replay, the on-disk view against debugfs, and the journal listing
//! against `debugfs logdump -a`.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{live, Live};
use crate::ext::files::check_files;
use crate::util::*;

/// A dirty snapshot: the main chain's layers 2 and 4, and the checksum-v1
/// disk (its top).
fn dirty(l: &Live) -> Vec<String> {
    vec![l.main[2].clone(), l.main[4].clone(), l.v1[1].clone()]
}

fn abs(l: &Live, image: &str) -> String {
    l.dir.join(image).to_str().unwrap().to_owned()
}

#[test]
fn the_snapshots_are_what_the_script_made() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    for (i, image) in l.main.iter().enumerate() {
        let j = layerscope(d.path(), &["journal", "--json", &abs(l, image)])
            .ok()
            .json();
        let needed = j["recovery"]["needed"].as_bool().unwrap();
        // Layers 2 and 4 were taken mounted; 0, 1 and 3 unmounted.
        assert_eq!(needed, i == 2 || i == 4, "{image}: needs recovery");
        if needed {
            assert_eq!(j["recovery"]["outcome"]["state"], "replayed", "{image}");
            let n = j["recovery"]["transactions_replayed"].as_u64().unwrap();
            let want = if i == 2 { 3 } else { 2 };
            assert!(
                n >= want,
                "{image}: {n} transactions, the script fsynced {want} times"
            );
            // Checksum v3, 64-bit tags: what the kernel does with metadata_csum.
            let f = j["journal"]["features"].to_string();
            assert!(
                f.contains("journal_checksum_v3") && f.contains("journal_64bit"),
                "{f}"
            );
        }
    }
    for image in [&l.v1[1], &l.fc[1]] {
        let j = layerscope(d.path(), &["journal", "--json", &abs(l, image)])
            .ok()
            .json();
        assert_eq!(
            j["recovery"]["needed"], true,
            "{image}: powered off mounted"
        );
    }
}

/// Every path, every inode's stat, every file's bytes: the replayed view
/// is what e2fsck's replay leaves, as debugfs reads it.
#[test]
fn replayed_view_equals_e2fsck_journal_only() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    for image in l.main.iter().skip(1).chain(l.v1.last()) {
        let replayed = l.flat(image, true);
        let n = check_files(d.path(), &abs(l, image), replayed.to_str().unwrap());
        assert!(n > 5, "{image}: only {n} inodes checked");
    }
}

/// `--no-replay` is the disk as it is: what debugfs reads from the
/// flattened layer without replaying.
#[test]
fn no_replay_equals_debugfs_on_the_unreplayed_copy() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    for image in dirty(l) {
        let flat = l.flat(&image, false);
        let n = with_args(&["--no-replay"], || {
            check_files(d.path(), &abs(l, &image), flat.to_str().unwrap())
        });
        assert!(n > 5, "{image}: only {n} inodes checked");
    }
}

/// Every command says when it shows the replayed view, and how much.
#[test]
fn commands_say_the_journal_was_replayed() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let image = abs(l, &l.main[2]);
    let j = layerscope(d.path(), &["journal", "--json", &image])
        .ok()
        .json();
    let (t, b) = (
        j["recovery"]["transactions_replayed"].as_u64().unwrap(),
        j["recovery"]["blocks_replayed"].as_u64().unwrap(),
    );
    let want = format!("journal replayed in memory: {t} transaction(s), {b} block(s)");
    for args in [
        vec!["ls", "-l", &image, "/"],
        vec!["info", &image],
        vec!["stat", &image, "/etc/layer"],
        vec!["cat", &image, "/etc/layer"],
    ] {
        let r = layerscope(d.path(), &args).ok();
        assert!(r.stderr.contains(&want), "{args:?}: {}", r.stderr);
    }
    let r = layerscope(d.path(), &["ls", &image, "--no-replay"]).ok();
    assert!(!r.stderr.contains("replayed"), "{}", r.stderr);
    // The clean layers say nothing.
    let r = layerscope(d.path(), &["ls", &abs(l, &l.main[3])]).ok();
    assert_eq!(r.stderr, "");
}

/// A transaction's logged blocks (filesystem, journal) and revoked blocks.
type Logged = (Vec<(u64, u64)>, Vec<u64>);

/// What `debugfs logdump -a` lists: per transaction its sequence, each
/// logged block (filesystem block, journal block) and each revoked block.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dump {
    /// Sequence -> (logged blocks, revoked blocks), in order.
    transactions: BTreeMap<u32, Logged>,
    start: (u64, u32),
}

fn logdump(dir: &Path, flat: &str) -> Dump {
    let out = sh(dir, &["debugfs", "-R", "logdump -a", flat]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dump::default();
    let mut seq = 0u32;
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Journal starts at block") {
            d.start = (
                w[4].trim_end_matches(',').parse().unwrap(),
                w[6].parse().unwrap(),
            );
        } else if line.starts_with("Found expected sequence") {
            seq = w[3].trim_end_matches(',').parse().unwrap();
            d.transactions.entry(seq).or_default();
        } else if line.trim_start().starts_with("FS block") {
            // "  FS block 262 logged at journal block 2 (flags 0x0)"
            let fs: u64 = w[2].parse().unwrap();
            let j: u64 = w[7].parse().unwrap();
            d.transactions.entry(seq).or_default().0.push((fs, j));
        } else if line.trim_start().starts_with("Revoke FS block") {
            d.transactions
                .entry(seq)
                .or_default()
                .1
                .push(w[3].parse().unwrap());
        }
    }
    d
}

fn ours(j: &Value) -> Dump {
    let mut d = Dump {
        start: (
            j["journal"]["geometry"]["start"].as_u64().unwrap(),
            j["journal"]["geometry"]["sequence"].as_u64().unwrap() as u32,
        ),
        ..Dump::default()
    };
    for t in j["transactions"].as_array().unwrap() {
        let e = d
            .transactions
            .entry(t["sequence"].as_u64().unwrap() as u32)
            .or_default();
        for b in t["blocks"].as_array().unwrap() {
            e.0.push((
                b["fs_block"].as_u64().unwrap(),
                b["journal_block"].as_u64().unwrap(),
            ));
        }
        for r in t["revokes"].as_array().unwrap() {
            e.1.extend(
                r["blocks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap()),
            );
        }
    }
    d
}

#[test]
fn journal_json_agrees_with_logdump() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let mut revokes = 0;
    for image in dirty(l).iter().chain(l.fc.last()) {
        let flat = l.flat(image, false);
        let theirs = logdump(d.path(), flat.to_str().unwrap());
        let j = layerscope(d.path(), &["journal", "--json", &abs(l, image)])
            .ok()
            .json();
        let mine = ours(&j);
        assert_eq!(
            mine, theirs,
            "{image}: journal --json vs debugfs logdump -a"
        );
        assert!(!mine.transactions.is_empty(), "{image}: an empty log");
        revokes += mine.transactions.values().map(|t| t.1.len()).sum::<usize>();
        // The same through the chain and through the flat copy.
        let flat_j = layerscope(d.path(), &["journal", "--json", flat.to_str().unwrap()])
            .ok()
            .json();
        assert_eq!(ours(&flat_j), mine, "{image}: chain vs flattened");
    }
    assert!(
        revokes > 0,
        "the script's rm -rf of a journaled directory revokes blocks"
    );
}

/// The checksum-v1 disk: crc32 in commit blocks, 32-bit tags, 1 KiB
/// blocks; each commit's checksum matched (else recovery would stop).
#[test]
fn checksum_v1_journal() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let j = layerscope(d.path(), &["journal", "--json", &abs(l, &l.v1[1])])
        .ok()
        .json();
    let f: Vec<&str> = j["journal"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        f.contains(&"journal_checksum") && !f.contains(&"journal_64bit"),
        "{f:?}"
    );
    assert_eq!(j["journal"]["geometry"]["block_size"], 1024);
    let commits: Vec<&Value> = j["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["commit"].as_object().map(|_| &t["commit"]))
        .collect();
    assert!(commits.len() >= 2, "{j}");
    assert!(
        commits.iter().all(|c| c["checksum_v1"].is_u64()),
        "{commits:?}"
    );
    assert_eq!(j["recovery"]["outcome"]["state"], "replayed");
    assert_eq!(
        j["recovery"]["transactions_replayed"].as_u64().unwrap() as usize,
        commits.len()
    );
}

/// The fast-commit disk: the area's records as debugfs logdump lists them
/// (tag names and inodes), and a clear "not replayed".
#[test]
fn fast_commit_area_is_listed() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let image = abs(l, &l.fc[1]);
    let j = layerscope(d.path(), &["journal", "--json", &image])
        .ok()
        .json();
    let fc = &j["fast_commit"];
    let records = fc["records"].as_array().unwrap();
    assert!(
        !records.is_empty(),
        "the script's fsyncs make fast commits: {fc}"
    );
    assert_eq!(fc["replayed"], false);
    let flat = l.flat(&l.fc[1], false);
    let out = sh(
        d.path(),
        &["debugfs", "-R", "logdump -a", flat.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let theirs: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("tag "))
        .map(|l| {
            l.split(',')
                .next()
                .unwrap()
                .trim_start_matches("tag ")
                .to_owned()
        })
        .collect();
    let mine: Vec<String> = records
        .iter()
        .map(|r| r["tag"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mine, theirs, "fast-commit tags vs logdump");
    // Each fsync's fast commit ends in a valid tail.
    assert_eq!(
        fc["valid_records"].as_u64().unwrap() as usize,
        records.len(),
        "{fc}"
    );
    let t = layerscope(d.path(), &["journal", &image]).ok().text();
    assert!(t.contains("not replayed"), "{t}");
}

/// An inode unlinked while open is on the orphan list (layer 2) or in the
/// orphan file (the checksum-v1 disk), and listed as what the kernel
/// deletes.
#[test]
fn orphans_are_listed() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    for (image, place, size) in [
        (&l.main[2], "orphan_list", 200_000),
        (&l.v1[1], "orphan_file", 50_000),
    ] {
        let j = layerscope(d.path(), &["journal", "--json", &abs(l, image)])
            .ok()
            .json();
        let o = j["orphans"].as_array().unwrap();
        assert!(
            o.iter()
                .any(|o| o["place"] == place && o["action"] == "delete" && o["size"] == size),
            "{image}: {o:?}"
        );
    }
}

/// A replayed block read through the layered reader is recorded as served
/// by the journal of the layer holding its copy.
#[test]
fn hit_map_says_journal_of_layer() {
    use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
    use layerscope::block::hitmap::Served;
    use layerscope::block::layered::LayeredReader;
    use layerscope::fs::ext::jbd2::mount::Mount;
    use layerscope::fs::ext::Ext4;
    use layerscope::volume::layers::Origin;
    use layerscope::volume::Geometry;
    let Some(l) = live() else { return };
    let chain = open_chain(&abs(l, &l.main[2]), ChainOptions::default(), &FsOpener).unwrap();
    let reader = Arc::new(LayeredReader::new(&chain).unwrap());
    let mount = Mount {
        origin: Some(Arc::new(Origin {
            reader: Arc::clone(&reader),
            geometry: Arc::new(Geometry::window(
                0,
                layerscope::block::BlockSource::len(reader.as_ref()),
            )),
        })),
        ..Mount::default()
    };
    let fs = Ext4::open_with(reader.clone(), &mount).unwrap();
    let replayed = fs.replayed().expect("layer 2 replays").clone();
    let blocks: Vec<u64> = replayed.blocks().collect();
    assert!(!blocks.is_empty());
    let bs = fs.superblock().block_size;
    let mut buf = vec![0u8; bs as usize];
    for &b in &blocks {
        layerscope::block::BlockSource::read_at(replayed.as_ref(), b * bs, &mut buf).unwrap();
        let layer = replayed.journal_layer(b).unwrap();
        assert_eq!(
            layer,
            Some(2),
            "block {b}: the copy is in layer 2's journal"
        );
        assert_eq!(
            reader.hits().served(b * bs),
            Served::Journal(2),
            "block {b}"
        );
    }
}
