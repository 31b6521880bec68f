//! XFS through the command line, on the shared images (base.qcow2 <-
//! top.qcow2): info, groups, ls -R, stat, cat and blocks (--json, --layer)
//! against xfs_db on the flat image of the same layer and qemu-img map for
//! the layers; diff and blame through the filesystem-independent path
//! against what xfs_db shows changed between the layers.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{flat, images, tools, xfs_db, Entry, Image};
use crate::util::*;

/// Runs layerscope in the image's directory and parses its JSON.
fn json(img: &Image, args: &[&str]) -> Value {
    layerscope(&img.dir, args).ok().json()
}

/// `name = value` of xfs_db's print, one batch of commands.
fn db_values(img: &Image, layer: usize, commands: &[String]) -> Vec<(String, String)> {
    let cmds: Vec<&str> = commands.iter().map(String::as_str).collect();
    super::db_pairs(&xfs_db(&img.dir, flat(img, layer), &cmds))
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    &pairs
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {pairs:?}"))
        .1
}

#[test]
fn info_groups_ls_stat_cat_blocks() {
    if !tools() {
        return;
    }
    for img in images() {
        let what = img.variant.name;
        // info: the superblock as of each layer (layer 1 relabelled it).
        for (layer, label) in [(Some("0"), "layer0"), (None, "layer1")] {
            let mut args = vec!["info", "top.qcow2", "--json"];
            args.extend(layer.map(|l| ["--layer", l]).into_iter().flatten());
            let j = json(img, &args);
            let sb = db_values(
                img,
                layer.map_or(1, |_| 0),
                &["sb 0".into(), "p blocksize agcount fname".into()],
            );
            assert_eq!(j["filesystem"], "xfs", "{what}");
            assert_eq!(j["label"], label, "{what}");
            // xfs_db prints the 12 bytes, NULs as \000.
            let fname = value(&sb, "fname").trim_matches('"');
            assert_eq!(fname.split("\\000").next(), Some(label), "{what}");
            assert_eq!(
                j["block_size"].as_u64().unwrap().to_string(),
                value(&sb, "blocksize"),
                "{what}"
            );
            let uuid = xfs_db(&img.dir, flat(img, 0), &["uuid"]);
            assert_eq!(
                format!("UUID = {}", j["uuid"].as_str().unwrap()),
                uuid.trim(),
                "{what}"
            );
        }
        let text = layerscope(&img.dir, &["info", "top.qcow2"]).ok().text();
        assert!(text.contains("layer1"), "{what}: {text}");

        // groups: one row per AG, its counts as the AGF and AGI hold them.
        let rows = json(img, &["groups", "top.qcow2", "--json"]);
        let rows = rows.as_array().unwrap();
        let agcount: usize = value(
            &db_values(img, 1, &["sb 0".into(), "p agcount".into()]),
            "agcount",
        )
        .parse()
        .unwrap();
        assert_eq!(rows.len(), agcount, "{what}");
        let mut cmds = Vec::new();
        for ag in 0..agcount {
            cmds.extend([
                format!("agf {ag}"),
                "p freeblks".into(),
                format!("agi {ag}"),
                "p count freecount".into(),
            ]);
        }
        let pairs = db_values(img, 1, &cmds);
        let of = |k: &str| -> Vec<&String> {
            pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v)
                .collect()
        };
        let (frees, counts, freecounts) = (of("freeblks"), of("count"), of("freecount"));
        assert_eq!(frees.len(), agcount, "{what}");
        for (((row, free), count), freecount) in rows.iter().zip(frees).zip(counts).zip(freecounts)
        {
            assert_eq!(row["free_blocks"].to_string(), *free, "{what}: {row}");
            assert_eq!(row["inodes"].to_string(), *count, "{what}: {row}");
            assert_eq!(row["free_inodes"].to_string(), *freecount, "{what}: {row}");
        }
        let text = layerscope(&img.dir, &["groups", "top.qcow2"]).ok().text();
        assert_eq!(text.lines().count(), agcount + 1, "{what}: {text}");

        // ls -R: every path the protofile made, with xfs_db's inode
        // numbers for one directory of each form.
        let j = json(img, &["ls", "-R", "--json", "top.qcow2", "/"]);
        assert_eq!(j["errors"], serde_json::json!([]), "{what}");
        let mut listed = BTreeMap::new();
        for e in j["entries"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            if name == "." || name == ".." {
                continue;
            }
            let dir = e["dir"].as_str().unwrap();
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            listed.insert(path, e["inode"].as_u64().unwrap());
        }
        let expected: BTreeSet<&String> = img.tree.keys().collect();
        assert_eq!(listed.keys().collect::<BTreeSet<_>>(), expected, "{what}");
        for dir in ["/special", "/block", "/leaf", "/node", "/btree"] {
            let db = xfs_db(&img.dir, flat(img, 1), &[&format!("path {dir}"), "ls"]);
            let mut n = 0;
            for line in db.lines() {
                // offset inode type hash length name (good)
                let parts: Vec<&str> = line.split_whitespace().collect();
                let name = parts[5..].join(" ");
                let name = name.trim_end_matches(" (good)");
                if name == "." || name == ".." {
                    continue;
                }
                let ino: u64 = parts[1].parse().unwrap();
                assert_eq!(listed[&format!("{dir}/{name}")], ino, "{what}: {line}");
                n += 1;
            }
            let ours = listed
                .keys()
                .filter(|p| {
                    p.strip_prefix(&format!("{dir}/"))
                        .is_some_and(|r| !r.contains('/'))
                })
                .count();
            assert_eq!(n, ours, "{what}: {dir}");
        }

        // stat and cat: every regular file of /files and /special.
        let paths: Vec<&String> = img
            .tree
            .keys()
            .filter(|p| p.starts_with("/files/") || p.starts_with("/special/"))
            .collect();
        let mut cmds = Vec::new();
        for p in &paths {
            cmds.push(format!("path {p}"));
            cmds.push("p core.mode core.size core.uid core.gid".into());
        }
        let pairs = db_values(img, 1, &cmds);
        let field = |k: &str| -> Vec<&String> {
            pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v)
                .collect()
        };
        let (modes, sizes, uids, gids) = (
            field("core.mode"),
            field("core.size"),
            field("core.uid"),
            field("core.gid"),
        );
        assert_eq!(modes.len(), paths.len(), "{what}");
        for (k, p) in paths.iter().enumerate() {
            let s = json(img, &["stat", "--json", "top.qcow2", p]);
            assert_eq!(
                format!("0{:o}", s["mode"].as_u64().unwrap()),
                *modes[k],
                "{what}: {p}"
            );
            assert_eq!(s["size"].to_string(), *sizes[k], "{what}: {p}");
            assert_eq!(s["uid"].to_string(), *uids[k], "{what}: {p}");
            assert_eq!(s["gid"].to_string(), *gids[k], "{what}: {p}");
            match &img.tree[*p] {
                Entry::File(body) => {
                    let run = layerscope(&img.dir, &["cat", "top.qcow2", p]).ok();
                    assert!(run.stdout == *body, "{what}: {p}: cat differs");
                }
                Entry::Symlink(target) => {
                    assert_eq!(
                        s["symlink_target"].as_str().unwrap().as_bytes(),
                        &target[..],
                        "{what}: {p}"
                    );
                }
                _ => {}
            }
        }
        let text = layerscope(&img.dir, &["stat", "top.qcow2", "/files/f1"])
            .ok()
            .text();
        assert!(text.contains("Runs (bytes):"), "{what}: {text}");

        // blocks: the extents xfs_db maps, each with the layer qemu-img
        // map says holds it.
        let agblocks: u64 = value(
            &db_values(img, 1, &["sb 0".into(), "p agblocks".into()]),
            "agblocks",
        )
        .parse()
        .unwrap();
        let bs = img_block_size(img);
        let map = qemu_map(&img.dir, "top.qcow2");
        let depth_at = |byte: u64| -> u64 {
            map.as_array()
                .unwrap()
                .iter()
                .find(|e| {
                    let s = e["start"].as_u64().unwrap();
                    s <= byte && byte < s + e["length"].as_u64().unwrap()
                })
                .unwrap()["depth"]
                .as_u64()
                .unwrap()
        };
        for p in ["/files/f5", "/files/f7", "/btree/entry-02000"] {
            let db = xfs_db(&img.dir, flat(img, 1), &[&format!("path {p}"), "bmap"]);
            // data offset O startblock S (A/B) count C flag F
            let mut expected = BTreeMap::new();
            for line in db.lines().filter(|l| l.starts_with("data offset")) {
                let w: Vec<&str> = line.split_whitespace().collect();
                let off: u64 = w[2].parse().unwrap();
                let (a, b) = w[5]
                    .trim_matches(|c| c == '(' || c == ')')
                    .split_once('/')
                    .unwrap();
                let linear = a.parse::<u64>().unwrap() * agblocks + b.parse::<u64>().unwrap();
                let count: u64 = w[7].parse().unwrap();
                for k in 0..count {
                    expected.insert(off + k, linear + k);
                }
            }
            assert!(!expected.is_empty(), "{what}: {p}: {db}");
            let rows = json(img, &["blocks", "--json", "top.qcow2", p]);
            let mut ours = BTreeMap::new();
            for r in rows.as_array().unwrap() {
                assert_eq!(r["meta"], false, "{what}: {p}: {r}");
                let (logical, physical, count) = (
                    r["logical"].as_u64().unwrap(),
                    r["physical"].as_u64().unwrap(),
                    r["count"].as_u64().unwrap(),
                );
                let depth = depth_at(physical * bs);
                assert_eq!(r["layer"].as_u64(), Some(1 - depth), "{what}: {p}: {r}");
                for k in 0..count {
                    ours.insert(logical + k, physical + k);
                }
            }
            assert_eq!(ours, expected, "{what}: {p}");
            let text = layerscope(&img.dir, &["blocks", "top.qcow2", p])
                .ok()
                .text();
            assert!(
                text.contains("layer 0") || text.contains("layer 1"),
                "{what}: {text}"
            );
        }
    }
}

/// The filesystem block size of an image, from xfs_db.
fn img_block_size(img: &Image) -> u64 {
    value(
        &db_values(img, 1, &["sb 0".into(), "p blocksize".into()]),
        "blocksize",
    )
    .parse()
    .unwrap()
}

/// What changed in an inode between the two flat images, in the diff's
/// words: xfs_db's `print core` of each path in both, the differing
/// fields mapped to the metadata names (the attribute fork's shape for
/// `xattrs`; access times, counters, LSNs and CRCs are not changes).
fn db_changes(img: &Image) -> BTreeMap<String, BTreeSet<&'static str>> {
    let paths: Vec<&String> = img.tree.keys().collect();
    let mut cmds = Vec::new();
    for p in &paths {
        cmds.push(format!("path {p}"));
        cmds.push("p core".into());
    }
    let per_path = |layer: usize| -> Vec<Vec<(String, String)>> {
        let text = xfs_db(
            &img.dir,
            flat(img, layer),
            &cmds.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut out: Vec<Vec<(String, String)>> = Vec::new();
        for (k, v) in super::db_pairs(&text) {
            if k == "core.magic" {
                out.push(Vec::new());
            }
            out.last_mut().unwrap().push((k, v));
        }
        out
    };
    let (old, new) = (per_path(0), per_path(1));
    assert_eq!(old.len(), paths.len());
    assert_eq!(new.len(), paths.len());
    let mut changes = BTreeMap::new();
    for (k, p) in paths.iter().enumerate() {
        let mut names = BTreeSet::new();
        for ((key, a), (key2, b)) in old[k].iter().zip(&new[k]) {
            assert_eq!(key, key2);
            if a == b {
                continue;
            }
            let name = match key.as_str() {
                "core.mode" => "mode",
                "core.uid" => "uid",
                "core.gid" => "gid",
                "core.forkoff" | "core.aformat" | "core.naextents" => "xattrs",
                k if k.starts_with("core.ctime") => "ctime",
                k if k.starts_with("core.mtime") => "mtime",
                _ => continue,
            };
            names.insert(name);
        }
        if !names.is_empty() {
            changes.insert((*p).clone(), names);
        }
    }
    changes
}

#[test]
fn diff_and_blame_through_the_generic_path() {
    if !tools() {
        return;
    }
    for img in images()
        .iter()
        .filter(|i| ["v5-4k", "v4-1k"].contains(&i.variant.name))
    {
        let what = img.variant.name;
        let expected = db_changes(img);
        assert!(expected.contains_key("/files/f2"), "{what}: {expected:?}");
        let j = json(img, &["diff", "--json", "top.qcow2"]);
        assert_eq!(j["method"], "trees", "{what}");
        let mut ours = BTreeMap::new();
        for c in j["changes"].as_array().unwrap() {
            assert_eq!(c["change"], "modified", "{what}: {c}");
            assert_eq!(c["content"], false, "{what}: {c}");
            let names: BTreeSet<String> = c["metadata"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            ours.insert(c["path"].as_str().unwrap().to_owned(), names);
        }
        let expected_names: BTreeMap<String, BTreeSet<String>> = expected
            .iter()
            .map(|(p, n)| (p.clone(), n.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        assert_eq!(ours, expected_names, "{what}");
        // The text says how it compared.
        let text = layerscope(&img.dir, &["diff", "top.qcow2"]).ok().text();
        assert!(
            text.contains("trees compared (xfs has no quick diff)"),
            "{what}: {text}"
        );

        // blame: the metadata of a file xfs_db shows changed comes from
        // layer 1, an untouched one's from layer 0; the bytes from the
        // layer qemu-img map says holds them (the base).
        for p in ["/files/f2", "/files/f6", "/a/b/c/d/e/leaf.txt"] {
            let b = json(img, &["blame", "--json", "top.qcow2", p]);
            let b = &b[0];
            let changed = expected.contains_key(p);
            assert_eq!(b["metadata_layer"], u64::from(changed), "{what}: {p}: {b}");
            assert_eq!(b["content_layer"], 0, "{what}: {p}: {b}");
        }
        let text = layerscope(&img.dir, &["blame", "-R", "top.qcow2", "/files"])
            .ok()
            .text();
        assert!(text.contains("/files/f2"), "{what}: {text}");
    }
}
