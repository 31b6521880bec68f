//! The filesystem trait against debugfs: a whole tree walked through
//! `layerscope::fs::Filesystem` alone (what the CLI, the TUI, diff and
//! blame call) equals debugfs's `ls -l`, `stat`, `dump`, `blocks` and
//! `ea_list` of the same image, node by node; and every path looks up
//! (through htree indexes where directories have them) to the node its
//! directory lists. Called on the images the other ext tests build, so
//! the layouts are theirs (one debugfs process per image).
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::fs::{FileType, RunKind};

use super::files::debugfs_batch;

/// The word after `key` in debugfs's `stat` text.
fn word_after<'a>(text: &'a str, key: &str) -> &'a str {
    let i = text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {text}"));
    text[i + key.len()..].split_whitespace().next().unwrap()
}

/// debugfs's time line (`mtime: 0x…:…` or `mtime: 0x…`) decoded as the
/// kernel does: (seconds with the epoch bits, nanoseconds).
fn stat_time(text: &str, name: &str) -> (i64, u32) {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    let v = line.split_whitespace().nth(1).unwrap();
    let (secs, extra) = match v.split_once(':') {
        Some((s, e)) => (s, u32::from_str_radix(e, 16).unwrap()),
        None => (v, 0),
    };
    let secs = u32::from_str_radix(secs.trim_start_matches("0x"), 16).unwrap();
    (
        i64::from(secs as i32) + (i64::from(extra & 3) << 32),
        extra >> 2,
    )
}

/// One node as the walk met it.
struct Seen {
    path: Vec<u8>,
    node: u64,
    file_type: FileType,
}

/// Walks `image` through the trait and compares every node with debugfs
/// on `flat` (the same filesystem as a raw image). Returns how many
/// nodes were compared.
pub(super) fn check(dir: &Path, image: &str, flat: &str) -> usize {
    let chain = open_chain(
        dir.join(image).to_str().unwrap(),
        ChainOptions::default(),
        &FsOpener,
    )
    .unwrap();
    let fs = layerscope::fs::open(Arc::new(LayeredReader::new(&chain).unwrap())).unwrap();
    let fs = fs.as_ref();
    // The tree, and each directory's entries as the trait lists them.
    let mut nodes: Vec<Seen> = Vec::new();
    let mut listings: BTreeMap<u64, Vec<(Vec<u8>, u64, u8)>> = BTreeMap::new();
    let mut stack = vec![(b"".to_vec(), fs.root())];
    while let Some((path, dir_node)) = stack.pop() {
        if listings.contains_key(&dir_node) {
            continue;
        }
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        fs.read_dir(dir_node, &mut problems, &mut |e| {
            entries.push(e);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(problems.is_empty(), "{image}: {path:?}: {problems:?}");
        let mut listed = Vec::new();
        for e in entries {
            listed.push((
                e.name.clone(),
                e.node,
                e.file_type.map_or(0, FileType::code),
            ));
            if e.is_dot_or_dotdot() {
                continue;
            }
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            let m = fs.metadata(e.node).unwrap();
            // Every path leads back to the node its directory lists
            // (debugfs makes names with a slash, which no path can name:
            // `mknod /fifo p` names the entry `/fifo`).
            if !e.name.contains(&b'/') {
                assert_eq!(
                    fs.lookup(&p).unwrap_or_else(|err| panic!(
                        "{image}: lookup {}: {err}",
                        String::from_utf8_lossy(&p)
                    )),
                    e.node,
                    "{image}: lookup {}",
                    String::from_utf8_lossy(&p)
                );
            }
            if m.file_type == FileType::Directory {
                stack.push((p.clone(), e.node));
            }
            nodes.push(Seen {
                path: p,
                node: e.node,
                file_type: m.file_type,
            });
        }
        listings.insert(dir_node, listed);
    }
    let mut requests = Vec::new();
    for d in listings.keys() {
        requests.push(format!("ls -l <{d}>"));
    }
    let dump = |n: u64| dir.join(format!("trait-walk-{n}.dump"));
    for n in &nodes {
        requests.push(format!("stat <{}>", n.node));
        requests.push(format!("blocks <{}>", n.node));
        requests.push(format!("ea_list <{}>", n.node));
        if matches!(n.file_type, FileType::Regular | FileType::Symlink) {
            requests.push(format!("dump <{}> {}", n.node, dump(n.node).display()));
        }
    }
    requests.sort();
    requests.dedup();
    let answers = debugfs_batch(dir, flat, &requests);
    let answer = |r: &str| -> String {
        String::from_utf8_lossy(
            answers
                .get(r)
                .unwrap_or_else(|| panic!("{image}: debugfs did not answer {r:?}")),
        )
        .into_owned()
    };
    // ls -l: inode, mode, type code, owner, size and name, entry by entry.
    for (d, listed) in &listings {
        let raw = answer(&format!("ls -l <{d}>"));
        let theirs: Vec<&str> = raw
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|w| w.parse::<u64>().ok())
                    .is_some_and(|i| i != 0)
            })
            .collect();
        assert_eq!(listed.len(), theirs.len(), "{image}: ls -l <{d}>:\n{raw}");
        for ((name, node, code), line) in listed.iter().zip(&theirs) {
            let m = fs.metadata(*node).unwrap();
            let head = format!(
                " {node:>6}  {:>6o} ({code})  {:>5}  {:>5}   {:>5} ",
                m.mode, m.uid, m.gid, m.size
            );
            assert!(
                line.starts_with(&head),
                "{image}: ls -l <{d}>: {line:?}, expected {head:?}"
            );
            // The name follows the date (`25-Nov-2026 05:44 `); names
            // with odd bytes are left to the CLI tests (debugfs escapes
            // them its own way).
            let at = line.find(':').unwrap() + 4;
            if name.iter().all(|b| (32..127).contains(b)) {
                assert_eq!(
                    &line[at..],
                    String::from_utf8_lossy(name),
                    "{image}: ls -l <{d}>"
                );
            }
        }
    }
    let bs = fs.block_size();
    let mut done = std::collections::HashSet::new();
    for n in &nodes {
        if !done.insert(n.node) {
            continue;
        }
        let what = format!(
            "{image}: {} (<{}>)",
            String::from_utf8_lossy(&n.path),
            n.node
        );
        let m = fs.metadata(n.node).unwrap();
        let stat = answer(&format!("stat <{}>", n.node));
        assert_eq!(
            u32::from_str_radix(word_after(&stat, "Mode:"), 8).unwrap(),
            m.mode & 0o7777,
            "{what}: mode"
        );
        assert_eq!(word_after(&stat, "User:"), m.uid.to_string(), "{what}: uid");
        assert_eq!(
            word_after(&stat, "Group:"),
            m.gid.to_string(),
            "{what}: gid"
        );
        assert_eq!(
            word_after(&stat, "Links:"),
            m.links.to_string(),
            "{what}: links"
        );
        assert_eq!(
            word_after(&stat, "Size:"),
            m.size.to_string(),
            "{what}: size"
        );
        let mt = m.mtime.unwrap();
        assert_eq!(
            stat_time(&stat, "mtime"),
            (mt.secs, mt.nsec),
            "{what}: mtime"
        );
        assert_eq!(
            m.file_type.name().split(' ').next().unwrap(),
            word_after(&stat, "Type:"),
            "{what}: type"
        );
        if let Some((major, minor)) = m.rdev {
            assert!(
                stat.contains(&format!("number: {major:02}:{minor:02} ")),
                "{what}: device {major}:{minor}\n{stat}"
            );
        }
        // blocks: data and map blocks in map order (debugfs reads a fast
        // symlink's target or a device number as block numbers: not
        // compared).
        let mapped = match m.file_type {
            FileType::Regular | FileType::Directory => true,
            FileType::Symlink => m.size >= 60,
            _ => false,
        };
        let theirs: Vec<u64> = answer(&format!("blocks <{}>", n.node))
            .split_whitespace()
            .map(|b| b.parse().unwrap())
            .collect();
        let mut ours = Vec::new();
        fs.runs(n.node, &mut Vec::new(), &mut |r| {
            if r.kind != RunKind::Attr {
                ours.extend(r.physical / bs..(r.physical + r.len) / bs);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        if mapped {
            assert_eq!(ours, theirs, "{what}: blocks");
        }
        // ea_list: names, sizes, short printable values.
        let mut problems = Vec::new();
        let xattrs = fs.xattrs(n.node, &mut problems).unwrap();
        assert!(problems.is_empty(), "{what}: {problems:?}");
        let listed = answer(&format!("ea_list <{}>", n.node));
        let theirs: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with("system.data "))
            .collect();
        assert_eq!(xattrs.len(), theirs.len(), "{what}: ea_list\n{listed}");
        for x in &xattrs {
            let head = format!("  {} ({})", String::from_utf8_lossy(&x.name), x.value.len());
            let line = theirs
                .iter()
                .find(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("{what}: ea_list lacks {head:?}:\n{listed}"));
            if x.value.len() < 40 && x.value.iter().all(|b| b.is_ascii_alphanumeric()) {
                assert_eq!(
                    *line,
                    format!("{head} = \"{}\"", String::from_utf8_lossy(&x.value)),
                    "{what}"
                );
            }
        }
        // Content: dump for files and long symlinks; the target for all.
        if m.file_type == FileType::Regular || m.file_type == FileType::Symlink {
            let mut body = vec![0u8; usize::try_from(m.size).unwrap()];
            let got = fs.read_file(n.node, 0, &mut body).unwrap();
            assert_eq!(got, body.len(), "{what}: read_file");
            let mut theirs = std::fs::read(dump(n.node)).unwrap();
            // debugfs 1.47.0 dumps all 60 bytes of i_block for inline
            // files shorter than that.
            if theirs.len() == 60 && body.len() < 60 {
                theirs.truncate(body.len());
            }
            if m.file_type == FileType::Symlink {
                assert_eq!(fs.read_link(n.node).unwrap(), body, "{what}: target");
                if m.size < 60 {
                    assert!(
                        stat.contains(&format!(
                            "Fast link dest: \"{}\"",
                            String::from_utf8_lossy(&body)
                        )),
                        "{what}: fast link\n{stat}"
                    );
                    let _ = std::fs::remove_file(dump(n.node));
                    continue;
                }
            }
            assert!(body == theirs, "{what}: content differs from dump");
            let _ = std::fs::remove_file(dump(n.node));
        }
    }
    nodes.len()
}

/// The htree hashes the lookups follow equal debugfs's `dx_hash`, for
/// each version (signed and unsigned), with and without a seed, on names
/// of every length class (under one word, across the 16- and 32-byte
/// chunks, 255 bytes) and bytes past ASCII.
#[test]
fn directory_hashes_equal_debugfs_dx_hash() {
    if !crate::util::need("debugfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = vec![
        "a".into(),
        "hello".into(),
        "entry-00042-of-the-big-directory".into(),
        "sixteen-bytes-xx".into(),
        "thirty-two-bytes-long-name-xxxxx".into(),
        "ünïcödé-näme".into(),
        "x".repeat(255),
    ];
    let seed = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";
    let seed_words: [u32; 4] = {
        let hex: Vec<u8> = seed
            .replace('-', "")
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        let mut w = [0u32; 4];
        for (i, c) in hex.chunks(4).enumerate() {
            w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    };
    // By number: debugfs 1.47 takes no name for the unsigned versions
    // (it reads `legacy_unsigned` as 0).
    let algs = [("0", 0u8), ("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)];
    let mut requests = Vec::new();
    let mut expect = Vec::new();
    for (alg, version) in algs {
        for name in &names {
            for (s, words) in [("", [0u32; 4]), (seed, seed_words)] {
                let seed_arg = if s.is_empty() {
                    String::new()
                } else {
                    format!(" -s {s}")
                };
                requests.push(format!("dx_hash -h {alg}{seed_arg} {name}"));
                expect.push(
                    layerscope::fs::ext::dirhash::hash(name.as_bytes(), version, words).unwrap(),
                );
            }
        }
    }
    std::fs::write(tmp.path().join("none"), b"").unwrap();
    let answers = debugfs_batch(tmp.path(), "none", &requests);
    for (req, ours) in requests.iter().zip(expect) {
        let text = String::from_utf8_lossy(&answers[req]).into_owned();
        let theirs = text
            .split_whitespace()
            .skip_while(|w| *w != "is")
            .nth(1)
            .unwrap_or_else(|| panic!("{req}: {text}"));
        assert_eq!(format!("{ours:#x}"), theirs, "{req}");
    }
}
