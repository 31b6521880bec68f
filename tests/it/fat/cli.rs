//! FAT through the command line, on a two-layer chain (base.qcow2 <-
//! top.qcow2, the top made with mtools on a copy: a file added, one
//! overwritten): info, groups, ls -R, stat, cat and blocks (--json,
//! --layer) against blkid, fsck.fat, mdir, mtype and mshowfat on the flat
//! image of the same layer and qemu-img map for the layers; diff and blame
//! through the filesystem-independent path against what mtools sees
//! changed between the layers.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::{fsck_line, make_image, mtools, showfat_runs, tools};
use crate::util::*;

/// The chain, built in `dir`: flat0.img/base.qcow2 and flat1.img/top.qcow2.
fn build(dir: &Path) {
    make_image(
        dir,
        "flat0.img",
        &["-F", "16", "-s", "4", "-n", "LSCOPE", "20000"],
    );
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
    std::fs::write(dir.join("README.TXT"), vec![b'x'; 9000]).unwrap();
    mtools(
        dir,
        &["mcopy", "-o", "-i", "flat1.img", "README.TXT", "::/"],
    );
    thin_overlay(
        dir,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("flat1.img"),
        "",
        false,
    );
}

fn json(dir: &Path, args: &[&str]) -> Value {
    layerscope(dir, args).ok().json()
}

/// `mdir -/ -b` of a flat image: every path, directories with a `/`.
fn mdir(dir: &Path, image: &str) -> BTreeSet<String> {
    String::from_utf8(mtools(dir, &["mdir", "-i", image, "-/", "-b", "::/"]))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim_start_matches("::").to_owned())
        .collect()
}

#[test]
fn fat_chain_through_the_cli() {
    if !tools() || !need("qemu-img") || !need("blkid") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);

    // info and groups, as of each layer.
    for (layer, flat) in [(Some("0"), "flat0.img"), (None, "flat1.img")] {
        let with = |args: &[&'static str]| {
            let mut a = args.to_vec();
            a.extend(layer.map(|l| ["--layer", l]).into_iter().flatten());
            a
        };
        let blkid = |k: &str| {
            let out = sh(dir, &["blkid", "-p", "-s", k, "-o", "value", flat]).stdout;
            String::from_utf8(out).unwrap().trim().to_owned()
        };
        let j = json(dir, &with(&["info", "top.qcow2", "--json"]));
        assert_eq!(j["filesystem"], "vfat");
        assert_eq!(j["label"], blkid("LABEL"));
        assert_eq!(j["uuid"], blkid("UUID"));
        let fsck = String::from_utf8(sh(dir, &["fsck.fat", "-n", "-v", flat]).stdout).unwrap();
        let summary = fsck.lines().last().unwrap();
        let (used, total) = summary
            .rsplit_once(", ")
            .unwrap()
            .1
            .trim_end_matches(" clusters")
            .split_once('/')
            .unwrap();
        let free = total.parse::<u64>().unwrap() - used.parse::<u64>().unwrap();
        let rows = json(dir, &with(&["groups", "top.qcow2", "--json"]));
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        for r in rows {
            assert_eq!(r["free_clusters"], free, "{summary}: {r}");
        }
        assert!(layerscope(dir, &with(&["info", "top.qcow2"]))
            .ok()
            .text()
            .contains("LSCOPE"));
    }

    // ls -R: every path mdir lists, as of each layer; cat: mtype's bytes.
    for (layer, flat) in [(Some("0"), "flat0.img"), (None, "flat1.img")] {
        let mut args = vec!["ls", "-R", "--json", "top.qcow2", "/"];
        args.extend(layer.map(|l| ["--layer", l]).into_iter().flatten());
        let j = json(dir, &args);
        assert_eq!(j["errors"], serde_json::json!([]));
        let mut ours = BTreeSet::new();
        for e in j["entries"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            if name == "." || name == ".." {
                continue;
            }
            let slash = if e["file_type"] == 2 { "/" } else { "" };
            ours.insert(format!(
                "{}/{name}{slash}",
                e["dir"].as_str().unwrap().trim_end_matches('/')
            ));
        }
        let expected = mdir(dir, flat);
        assert_eq!(ours, expected, "layer {layer:?}");
        for p in expected.iter().filter(|p| !p.ends_with('/')) {
            let mut args = vec!["cat", "top.qcow2", p.as_str()];
            args.extend(layer.map(|l| ["--layer", l]).into_iter().flatten());
            let ours = layerscope(dir, &args).ok().stdout;
            let theirs = mtools(dir, &["mtype", "-i", flat, &format!("::{p}")]);
            assert!(ours == theirs, "{p}: cat differs from mtype");
            let mut args = vec!["stat", "--json", "top.qcow2", p.as_str()];
            args.extend(layer.map(|l| ["--layer", l]).into_iter().flatten());
            assert_eq!(json(dir, &args)["size"], theirs.len(), "{p}");
        }
    }

    // blocks: mshowfat's clusters, each with the layer qemu-img map says
    // holds it.
    let fsck = String::from_utf8(sh(dir, &["fsck.fat", "-n", "-v", "flat1.img"]).stdout).unwrap();
    let data: u64 = fsck_line(&fsck, "Data area starts at byte")
        .split_whitespace()
        .nth(5)
        .unwrap()
        .parse()
        .unwrap();
    let map = qemu_map(dir, "top.qcow2");
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
    let mut layers_seen = BTreeSet::new();
    for p in [
        "/fragmented.bin",
        "/EFI/new.txt",
        "/README.TXT",
        "/EFI/BOOT/BOOTX64.EFI",
    ] {
        let showfat = String::from_utf8(mtools(
            dir,
            &["mshowfat", "-i", "flat1.img", &format!("::{p}")],
        ))
        .unwrap();
        let expected: Vec<u64> = showfat_runs(&showfat)
            .into_iter()
            .flat_map(|(a, n)| a..a + n)
            .collect();
        let rows = json(dir, &["blocks", "--json", "top.qcow2", p]);
        let info = json(dir, &["info", "--json", "top.qcow2"]);
        let cluster = info["block_size"].as_u64().unwrap();
        let mut ours = Vec::new();
        let mut logical = 0;
        for r in rows.as_array().unwrap() {
            assert_eq!(r["logical"], logical, "{p}: {r}");
            let (physical, count) = (
                r["physical"].as_u64().unwrap(),
                r["count"].as_u64().unwrap(),
            );
            let depth = depth_at(physical * cluster);
            assert_eq!(r["layer"].as_u64(), Some(1 - depth), "{p}: {r}");
            layers_seen.insert(1 - depth);
            for k in 0..count {
                ours.push((physical + k) * cluster - data);
            }
            logical += count;
        }
        let ours: Vec<u64> = ours.into_iter().map(|b| b / cluster + 2).collect();
        assert_eq!(ours, expected, "{p}: {showfat}");
    }
    assert_eq!(layers_seen, BTreeSet::from([0, 1]));

    // diff: added paths and changed bytes as mdir and mtype see them.
    let (old, new) = (mdir(dir, "flat0.img"), mdir(dir, "flat1.img"));
    let mut expected = BTreeMap::new();
    for p in new.difference(&old) {
        expected.insert(p.trim_end_matches('/').to_owned(), ("added", false));
    }
    for p in old.difference(&new) {
        expected.insert(p.trim_end_matches('/').to_owned(), ("deleted", false));
    }
    for p in old.intersection(&new).filter(|p| !p.ends_with('/')) {
        let a = mtools(dir, &["mtype", "-i", "flat0.img", &format!("::{p}")]);
        let b = mtools(dir, &["mtype", "-i", "flat1.img", &format!("::{p}")]);
        if a != b {
            expected.insert(p.clone(), ("modified", true));
        }
    }
    assert_eq!(expected.len(), 2, "{expected:?}");
    let j = json(dir, &["diff", "--json", "top.qcow2"]);
    assert_eq!(j["method"], "trees");
    // Metadata-only changes (a directory's times) are not what mtools
    // compares.
    let ours: BTreeMap<String, (&str, bool)> = j["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] != "modified" || c["content"] == true)
        .map(|c| {
            let kind = match c["change"].as_str().unwrap() {
                "added" => "added",
                "deleted" => "deleted",
                _ => "modified",
            };
            let path = c["path"].as_str().unwrap().to_owned();
            (path, (kind, kind == "modified"))
        })
        .collect();
    assert_eq!(ours, expected, "{j}");
    let text = layerscope(dir, &["diff", "top.qcow2"]).ok().text();
    assert!(
        text.contains("trees compared (vfat has no quick diff)"),
        "{text}"
    );

    // blame: the added file and the rewritten bytes come from layer 1,
    // an untouched file from layer 0.
    for (p, content, created) in [
        ("/EFI/new.txt", 1, Some(1)),
        ("/README.TXT", 1, None),
        ("/readme.md", 0, None),
    ] {
        let b = json(dir, &["blame", "--json", "top.qcow2", p]);
        let b = &b[0];
        assert_eq!(b["content_layer"], content, "{p}: {b}");
        if let Some(c) = created {
            assert_eq!(b["created_layer"], c, "{p}: {b}");
        }
    }
}
