//! The superblock, the AG headers and the groups listing against xfs_db
//! (`sb 0`, `agf N`, `agi N`, `agfl N`, `freesp`) and xfs_info, for every
//! variant, as of both layers of the chain.
use layerscope::fs::report::{RawValue, Report};

use super::*;

/// xfs_db's value as a number: decimal, `0x` hex, `null` (all ones of
/// `size` bytes).
fn db_number(v: &str, size: u64) -> Option<u64> {
    // An empty value is a 0 xfs_db does not print (`rmaproot = `).
    let Some(v) = v.split_whitespace().next() else {
        return Some(0);
    };
    if v == "null" {
        return Some(if size >= 8 {
            u64::MAX
        } else {
            (1u64 << (size * 8)) - 1
        });
    }
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Checks every field xfs_db prints against the report field
/// `prefix + name`; returns how many were compared.
fn compare(report: &Report, prefix: &str, db: &[(String, String)], what: &str) -> usize {
    let mut compared = 0;
    for (k, v) in db {
        // Arrays and fields xfs_db spells differently from the kernel.
        if k.contains('[') || k == "pad32" {
            continue;
        }
        let name = format!("{prefix}{k}");
        let ours = report
            .field(&name)
            .unwrap_or_else(|| panic!("{what}: xfs_db prints {k} = {v}; we have no {name}"));
        match &ours.raw {
            RawValue::Uint(n) => {
                if k == "crc" && ours.check.is_none() {
                    // v4: no CRC; xfs_db shows the field's bytes.
                    assert_eq!(Some(*n), db_number(v, 4), "{what}: {name}");
                } else if k == "crc" {
                    let c = ours
                        .check
                        .unwrap_or_else(|| panic!("{what}: {name} has no check"));
                    assert_eq!(Some(c.stored as u64), db_number(v, 4), "{what}: {name}");
                    assert_eq!(c.ok(), v.contains("(correct)"), "{what}: {name} {v}");
                } else {
                    assert_eq!(
                        Some(*n),
                        db_number(v, ours.size),
                        "{what}: {name} (xfs_db: {v})"
                    );
                }
            }
            RawValue::Bytes(b) => {
                if k.contains("uuid") {
                    assert_eq!(&ours.shown, v, "{what}: {name}");
                } else if k == "fname" {
                    let label = v.trim_matches('"').split("\\000").next().unwrap();
                    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                    assert_eq!(String::from_utf8_lossy(&b[..end]), label, "{what}: {name}");
                } else {
                    continue;
                }
            }
        }
        compared += 1;
    }
    compared
}

#[test]
fn superblock_equals_xfs_db() {
    if !tools() {
        return;
    }
    for img in images() {
        for layer in 0..2 {
            let fs = open(img, Some(layer));
            let what = format!("{} layer {layer}", img.variant.name);
            let sb = fs.superblock();
            let db = db_pairs(&xfs_db(&img.dir, flat(img, layer), &["sb 0", "print"]));
            let n = compare(&sb, "sb_", &db, &what);
            assert!(n >= 45, "{what}: only {n} fields compared");
            assert!(sb.problems.is_empty(), "{what}: {:?}", sb.problems);
            let label = fs.label().unwrap();
            assert_eq!(label, format!("layer{layer}").as_bytes(), "{what}");
            assert_eq!(
                fs.uuid().unwrap(),
                db.iter().find(|(k, _)| k == "uuid").unwrap().1
            );
        }
    }
}

/// xfs_info's `name=value` settings.
fn xfs_info(dir: &Path, image: &str) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(&sh(dir, &["xfs_info", image]).stdout).into_owned();
    let mut out = BTreeMap::new();
    // The first of each name wins: `bsize` of the data section comes
    // before the log's and naming's.
    for tok in text.replace(',', " ").split_whitespace() {
        if let Some((k, v)) = tok.split_once('=') {
            if !k.is_empty() && !v.is_empty() {
                out.entry(k.to_owned()).or_insert_with(|| v.to_owned());
            }
        }
    }
    out
}

#[test]
fn features_by_name_and_geometry_equal_xfs_info() {
    if !tools() {
        return;
    }
    for img in images() {
        let fs = open(img, None);
        let what = img.variant.name;
        let sb = fs.superblock();
        let info = xfs_info(&img.dir, &img.top_raw);
        let shown = |f: &str| sb.field(f).map(|f| f.shown.clone()).unwrap_or_default();
        let v5 = info["crc"] == "1";
        assert_eq!(shown("sb_versionnum").starts_with("v5"), v5, "{what}");
        for (key, field, name) in [
            ("finobt", "sb_features_ro_compat", "finobt"),
            ("rmapbt", "sb_features_ro_compat", "rmapbt"),
            ("reflink", "sb_features_ro_compat", "reflink"),
            ("inobtcount", "sb_features_ro_compat", "inobtcount"),
            ("sparse", "sb_features_incompat", "sparse"),
            ("bigtime", "sb_features_incompat", "bigtime"),
            ("nrext64", "sb_features_incompat", "nrext64"),
        ] {
            let on = shown(field).split(", ").any(|n| n == name);
            assert_eq!(
                on,
                info[key] == "1",
                "{what}: {key} (xfs_info {})",
                info[key]
            );
        }
        let ftype = if v5 {
            shown("sb_features_incompat")
                .split(", ")
                .any(|n| n == "ftype")
        } else {
            shown("sb_features2").split(", ").any(|n| n == "FTYPE")
        };
        assert_eq!(ftype, info["ftype"] == "1", "{what}: ftype");
        let attr2 = shown("sb_features2").split(", ").any(|n| n == "ATTR2");
        assert_eq!(attr2, info["attr"] == "2", "{what}: attr");
        let lazy = shown("sb_features2")
            .split(", ")
            .any(|n| n == "LAZYSBCOUNT");
        assert_eq!(lazy, info["lazy-count"] == "1", "{what}: lazy-count");
        let val = |f: &str| sb.field(f).unwrap().value().to_string();
        assert_eq!(val("sb_agcount"), info["agcount"], "{what}");
        assert_eq!(val("sb_agblocks"), info["agsize"], "{what}");
        assert_eq!(val("sb_blocksize"), info["bsize"], "{what}");
        assert_eq!(val("sb_inodesize"), info["isize"], "{what}");
        assert_eq!(val("sb_dblocks"), info["blocks"], "{what}");
        assert_eq!(fs.block_size().to_string(), info["bsize"], "{what}");
    }
}

#[test]
fn ag_headers_equal_xfs_db() {
    if !tools() {
        return;
    }
    for img in images() {
        let fs = open(img, None);
        let sb = fs.superblock();
        let agcount = sb.field("sb_agcount").unwrap().value();
        let sect = sb.field("sb_sectsize").unwrap().value();
        let v5 = sb.field("sb_versionnum").unwrap().value() & 0xf == 5;
        assert!(agcount >= 6, "{}: {agcount} AGs", img.variant.name);
        for ag in 0..agcount {
            let what = format!("{} AG {ag}", img.variant.name);
            let r = fs.group_report(ag).unwrap();
            assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
            let agf = db_pairs(&xfs_db(
                &img.dir,
                &img.top_raw,
                &[&format!("agf {ag}"), "print"],
            ));
            let agi = db_pairs(&xfs_db(
                &img.dir,
                &img.top_raw,
                &[&format!("agi {ag}"), "print"],
            ));
            let n = compare(&r, "agf_", &agf, &what);
            assert!(n >= 15, "{what}: only {n} AGF fields");
            let n = compare(&r, "agi_", &agi, &what);
            assert!(n >= 10, "{what}: only {n} AGI fields");
            let agfl_text = xfs_db(&img.dir, &img.top_raw, &[&format!("agfl {ag}"), "print"]);
            let agfl = db_pairs(&agfl_text);
            if v5 {
                let n = compare(&r, "agfl_", &agfl, &what);
                assert_eq!(n, 5, "{what}: AGFL fields");
            }
            // The free list: slot -> block, as xfs_db lists it.
            let list = agfl
                .iter()
                .find(|(k, _)| k.starts_with("bno["))
                .unwrap()
                .1
                .clone();
            let theirs: Vec<(u64, u64)> = list
                .split_whitespace()
                .filter_map(|t| t.split_once(':'))
                .filter(|(_, b)| *b != "null")
                .map(|(s, b)| (s.parse().unwrap(), b.parse().unwrap()))
                .collect();
            // The AGF is sector 1 of the AG, the AGFL sector 3.
            let ring = r.offset + 2 * sect + if v5 { 36 } else { 0 };
            let mut ours: Vec<(u64, u64)> = r
                .fields
                .iter()
                .filter(|f| f.name == "agfl_bno")
                .map(|f| ((f.offset - ring) / 4, f.value()))
                .collect();
            ours.sort();
            assert_eq!(ours, theirs, "{what}: free list");
        }
    }
}

#[test]
fn groups_listing_equals_freesp_and_the_inode_trees() {
    if !tools() {
        return;
    }
    for img in images() {
        for layer in 0..2 {
            let fs = open(img, Some(layer));
            let table = fs.groups(0, u64::MAX).unwrap();
            let v5 = img.variant.name.starts_with("v5");
            assert_eq!(table.rows.len() as u64, table.total);
            let col = |name: &str| table.columns.iter().position(|c| c.title == name).unwrap();
            for row in &table.rows {
                let what = format!("{} layer {layer} AG {}", img.variant.name, row.index);
                let image = flat(img, layer);
                let freesp = xfs_db(&img.dir, image, &[&format!("freesp -s -a {}", row.index)]);
                let total = |label: &str| -> String {
                    freesp
                        .lines()
                        .find_map(|l| l.strip_prefix(label))
                        .map(|v| v.trim().to_owned())
                        .unwrap_or_else(|| "0".into())
                };
                // freesp counts the free list's blocks as free extents of
                // one block; the AGF and its trees do not.
                let flcount: u64 = row.cells[col("free list")].parse().unwrap();
                let minus = |s: String| (s.parse::<u64>().unwrap() - flcount).to_string();
                assert_eq!(
                    row.cells[col("free extents")],
                    minus(total("total free extents")),
                    "{what}"
                );
                assert_eq!(
                    row.cells[col("free blocks")],
                    minus(total("total free blocks")),
                    "{what}"
                );
                let agi = db_pairs(&xfs_db(
                    &img.dir,
                    image,
                    &[&format!("agi {}", row.index), "print"],
                ));
                let get = |k: &str| agi.iter().find(|(n, _)| n == k).unwrap().1.clone();
                assert_eq!(row.cells[col("inodes")], get("count"), "{what}");
                assert_eq!(row.cells[col("free inodes")], get("freecount"), "{what}");
                let root = db_pairs(&xfs_db(
                    &img.dir,
                    image,
                    &[
                        &format!("agi {}", row.index),
                        "addr root",
                        "print level numrecs",
                    ],
                ));
                let level = &root.iter().find(|(k, _)| k == "level").unwrap().1;
                if level == "0" {
                    let recs = &root.iter().find(|(k, _)| k == "numrecs").unwrap().1;
                    assert_eq!(&row.cells[col("inode chunks")], recs, "{what}");
                }
                assert_eq!(row.cells[col("problems")], "0", "{what}");
                assert_eq!(row.ok, if v5 { Some(true) } else { None }, "{what}");
            }
            // Paging costs only the rows asked for.
            let page = fs.groups(2, 3).unwrap();
            assert_eq!(
                page.rows.iter().map(|r| r.index).collect::<Vec<_>>(),
                [2, 3, 4]
            );
            assert_eq!(page.rows[0], table.rows[2]);
        }
    }
}
