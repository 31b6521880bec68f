//! Directories, inodes, block maps, file contents, symlinks and attributes
//! against xfs_db (`ls`, `inode N` + `print`, `bmap`), the protofile's
//! sources, and the raw bytes at the blocks xfs_db maps.
use std::collections::BTreeSet;
use std::ops::ControlFlow;

use layerscope::fs::node::{FileType, RunKind};

use super::*;

/// `xfs_db ls` entries of each directory: path -> [(name, ino, type)].
fn db_ls(dir: &Path, image: &str, paths: &[&str]) -> BTreeMap<String, Vec<(Vec<u8>, u64, String)>> {
    let cmds: Vec<String> = paths.iter().map(|p| format!("ls {p}")).collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let mut args = vec!["-r".to_owned()];
    for c in &cmds {
        args.push("-c".into());
        args.push((*c).to_owned());
    }
    args.push(image.to_owned());
    let out = Command::new("xfs_db")
        .args(&args)
        .current_dir(dir)
        .output()
        .unwrap();
    let mut map: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut current = String::new();
    for line in out.stdout.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        if !text.starts_with(|c: char| c.is_ascii_digit()) {
            if let Some(p) = text.strip_suffix(':') {
                current = p.to_owned();
                map.entry(current.clone()).or_default();
            }
            continue;
        }
        // offset ino type hash namelen name (good)
        let mut fields = line.splitn(6, |&b| b == b' ').filter(|f| !f.is_empty());
        let words: Vec<&[u8]> = line
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
            .collect();
        let _ = fields.next();
        let ino: u64 = String::from_utf8_lossy(words[1]).parse().unwrap();
        let kind = String::from_utf8_lossy(words[2]).into_owned();
        let namelen: usize = String::from_utf8_lossy(words[4]).parse().unwrap();
        // The name starts after the namelen column; it may hold spaces.
        let col = line
            .windows(words[4].len() + 2)
            .position(|w| {
                w[0] == b' ' && &w[1..=words[4].len()] == words[4] && w[words[4].len() + 1] == b' '
            })
            .unwrap();
        let start = col + words[4].len() + 2;
        let name = line[start..start + namelen].to_vec();
        map.get_mut(&current).unwrap().push((name, ino, kind));
    }
    map
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "regular",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "chardev",
        FileType::BlockDevice => "blkdev",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::Unknown => "unknown",
    }
}

fn dirs(img: &Image) -> Vec<String> {
    let mut d = vec!["/".to_owned()];
    d.extend(
        img.tree
            .iter()
            .filter(|(_, e)| **e == Entry::Dir)
            .map(|(p, _)| p.clone()),
    );
    d
}

#[test]
fn directories_of_every_form_equal_xfs_db_ls() {
    if !tools() {
        return;
    }
    let mut formats = BTreeSet::new();
    for img in images() {
        let fs = open(img, None);
        let paths = dirs(img);
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let theirs = db_ls(&img.dir, &img.top_raw, &refs);
        for path in &paths {
            let what = format!("{} {path}", img.variant.name);
            let node = fs.lookup(path.as_bytes()).unwrap();
            let mut ours = Vec::new();
            let mut problems = Vec::new();
            fs.read_dir(node, &mut problems, &mut |e| {
                ours.push((
                    e.name,
                    e.node,
                    e.file_type.map(type_name).unwrap_or("unknown").to_owned(),
                ));
                ControlFlow::Continue(())
            })
            .unwrap();
            assert!(problems.is_empty(), "{what}: {problems:?}");
            let db = &theirs[path.as_str()];
            assert_eq!(&ours, db, "{what}: entries, in order");
            // Every name the protofile put there, and nothing else.
            let want: BTreeSet<Vec<u8>> = img
                .tree
                .keys()
                .filter_map(|p| {
                    let (parent, name) = p.rsplit_once('/')?;
                    let parent = if parent.is_empty() { "/" } else { parent };
                    (parent == path).then(|| name.as_bytes().to_vec())
                })
                .collect();
            let got: BTreeSet<Vec<u8>> = ours
                .iter()
                .map(|e| e.0.clone())
                .filter(|n| n != b"." && n != b"..")
                .collect();
            assert_eq!(got, want, "{what}");
            // Lookups through the hash index find every entry.
            for (name, ino, _) in &ours {
                let mut full = path.trim_end_matches('/').as_bytes().to_vec();
                full.push(b'/');
                full.extend_from_slice(name);
                if name == b"." || name == b".." {
                    continue;
                }
                assert_eq!(
                    fs.lookup(&full).unwrap(),
                    *ino,
                    "{what}: lookup {:?}",
                    String::from_utf8_lossy(name)
                );
            }
            let missing = format!("{}/no-such-name", path.trim_end_matches('/'));
            assert!(fs.lookup(missing.as_bytes()).is_err(), "{what}");
            // Which form this directory has, as xfs_db says.
            let core = db_pairs(&xfs_db(
                &img.dir,
                &img.top_raw,
                &[&format!("path {path}"), "print core.format core.size"],
            ));
            let format = core[0].1.clone();
            let size: u64 = core[1].1.parse().unwrap();
            let form = if format.starts_with("1 ") {
                "short-form"
            } else if format.starts_with("3 ") {
                "btree"
            } else if size <= fs.block_size() {
                "block"
            } else {
                "extents"
            };
            formats.insert(form);
        }
    }
    for f in ["short-form", "block", "extents", "btree"] {
        assert!(formats.contains(f), "no directory in {f} form: {formats:?}");
    }
}

/// xfs_db's asctime (`Mon Nov 30 18:36:28 2026`) of a Unix time, in UTC.
fn asctime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = (days + 4).rem_euclid(7);
    let wday = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][wd as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wday} {mon} {d:>2} {:02}:{:02}:{:02} {y}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Every inode of the tree: xfs_db's `print` of it, split per inode.
fn db_inodes(dir: &Path, image: &str, inos: &[u64]) -> Vec<Vec<(String, String)>> {
    let mut cmds = Vec::new();
    for i in inos {
        cmds.push(format!("inode {i}"));
        cmds.push("print".to_owned());
    }
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let text = xfs_db(dir, image, &refs);
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for (k, v) in db_pairs(&text) {
        if k == "core.magic" {
            out.push(Vec::new());
        }
        out.last_mut().unwrap().push((k, v));
    }
    assert_eq!(out.len(), inos.len());
    out
}

#[test]
fn inodes_equal_xfs_db_print() {
    if !tools() {
        return;
    }
    for img in images() {
        for layer in 0..2 {
            let fs = open(img, Some(layer));
            let paths: Vec<&String> = img.tree.keys().collect();
            let inos: Vec<u64> = paths
                .iter()
                .map(|p| fs.lookup(p.as_bytes()).unwrap())
                .collect();
            let prints = db_inodes(&img.dir, flat(img, layer), &inos);
            for ((path, ino), db) in paths.iter().zip(&inos).zip(&prints) {
                let what = format!("{} layer {layer} {path} (inode {ino})", img.variant.name);
                let get = |k: &str| db.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                let r = fs.node_report(*ino).unwrap();
                assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
                let val = |f: &str| {
                    r.field(f)
                        .unwrap_or_else(|| panic!("{what}: no {f}"))
                        .value()
                };
                for (ours, theirs) in [
                    ("di_uid", "core.uid"),
                    ("di_gid", "core.gid"),
                    ("di_size", "core.size"),
                    ("di_nblocks", "core.nblocks"),
                    ("di_extsize", "core.extsize"),
                    ("di_nextents", "core.nextents"),
                    ("di_anextents", "core.naextents"),
                    ("di_forkoff", "core.forkoff"),
                    ("di_gen", "core.gen"),
                    ("di_ino", "v3.inumber"),
                    ("di_changecount", "v3.change_count"),
                    ("di_cowextsize", "v3.cowextsize"),
                ] {
                    if let Some(v) = get(theirs) {
                        assert_eq!(val(ours).to_string(), v, "{what}: {ours}");
                    }
                }
                let nlink = get("core.nlinkv2").or(get("core.nlinkv1")).unwrap();
                assert_eq!(val("di_nlink").to_string(), nlink, "{what}: links");
                assert_eq!(
                    format!("0{:o}", val("di_mode")),
                    get("core.mode").unwrap(),
                    "{what}: mode"
                );
                assert_eq!(
                    val("di_format").to_string(),
                    get("core.format").unwrap().split(' ').next().unwrap(),
                    "{what}"
                );
                if let Some(f2) = get("v3.flags2") {
                    assert_eq!(format!("{:#x}", val("di_flags2")), f2, "{what}: flags2");
                }
                match get("v3.crc") {
                    Some(c) => {
                        let check = r.field("di_crc").unwrap().check.unwrap();
                        assert!(
                            c.ends_with("(correct)") && check.ok(),
                            "{what}: crc {c} {check:?}"
                        );
                        assert_eq!(format!("{:#x}", check.stored), c.split(' ').next().unwrap());
                    }
                    None => assert!(r.field("di_crc").is_none(), "{what}: a v2 inode has no CRC"),
                }
                let m = fs.metadata(*ino).unwrap();
                for (t, name) in [
                    (m.atime, "atime"),
                    (m.mtime, "mtime"),
                    (m.ctime, "ctime"),
                    (m.crtime, "crtime"),
                ] {
                    let prefix = if name == "crtime" { "v3" } else { "core" };
                    let Some(sec) = get(&format!("{prefix}.{name}.sec")) else {
                        assert!(t.is_none() || name != "crtime", "{what}: {name}");
                        continue;
                    };
                    let t = t.unwrap();
                    assert_eq!(asctime(t.secs), sec, "{what}: {name}");
                    assert_eq!(
                        t.nsec.to_string(),
                        get(&format!("{prefix}.{name}.nsec")).unwrap(),
                        "{what}: {name}"
                    );
                }
                for flag in [
                    "prealloc",
                    "realtime",
                    "immutable",
                    "append",
                    "sync",
                    "noatime",
                    "nodump",
                ] {
                    let on = get(&format!("core.{flag}")) == Some("1");
                    assert_eq!(m.flags.contains(&flag), on, "{what}: flag {flag}");
                }
                for flag in ["reflink", "bigtime", "dax", "nrext64"] {
                    let on = get(&format!("v3.{flag}")) == Some("1");
                    assert_eq!(m.flags.contains(&flag), on, "{what}: flag {flag}");
                }
                assert_eq!(m.allocated, val("di_nblocks") * fs.block_size(), "{what}");
                match &img.tree[path.as_str()] {
                    Entry::Block(a, b) => {
                        assert_eq!(m.file_type, FileType::BlockDevice, "{what}");
                        assert_eq!(m.rdev, Some((*a, *b)), "{what}");
                    }
                    Entry::Char(a, b) => {
                        assert_eq!(m.file_type, FileType::CharDevice, "{what}");
                        assert_eq!(m.rdev, Some((*a, *b)), "{what}");
                    }
                    Entry::Dir => assert_eq!(m.file_type, FileType::Directory, "{what}"),
                    Entry::Fifo => assert_eq!(m.file_type, FileType::Fifo, "{what}"),
                    Entry::Symlink(_) => assert_eq!(m.file_type, FileType::Symlink, "{what}"),
                    Entry::File(_) | Entry::Reserved(_) => {
                        assert_eq!(m.file_type, FileType::Regular, "{what}")
                    }
                }
            }
            // The overlay's edit: a changed mode.
            let f2 = fs.metadata(fs.lookup(b"/files/f2").unwrap()).unwrap();
            assert_eq!(f2.mode, if layer == 1 { 0o100_600 } else { 0o100_644 });
        }
    }
}

/// One extent as xfs_db's `bmap` prints it: (file block, AG, AG block,
/// count, unwritten).
type DbExtent = (u64, u64, u64, u64, bool);

/// xfs_db's `bmap` of each inode, in one run: `print core.nextents`
/// separates one inode's lines from the next.
fn db_bmaps(dir: &Path, image: &str, inos: &[u64]) -> Vec<Vec<DbExtent>> {
    let mut cmds = Vec::new();
    for i in inos {
        cmds.push(format!("inode {i}"));
        cmds.push("print core.nextents".to_owned());
        cmds.push("bmap -d".to_owned());
    }
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let text = xfs_db(dir, image, &refs);
    let mut out: Vec<Vec<DbExtent>> = Vec::new();
    for l in text.lines() {
        if l.starts_with("core.nextents") {
            out.push(Vec::new());
            continue;
        }
        // data offset 0 startblock 24 (0/24) count 25 flag 0
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 10 || w[0] != "data" {
            continue;
        }
        let (ag, agb) = w[5]
            .trim_matches(|c| c == '(' || c == ')')
            .split_once('/')
            .unwrap();
        out.last_mut().unwrap().push((
            w[2].parse().unwrap(),
            ag.parse().unwrap(),
            agb.parse().unwrap(),
            w[7].parse().unwrap(),
            w[9] == "1",
        ));
    }
    assert_eq!(out.len(), inos.len());
    out
}

#[test]
fn block_maps_equal_xfs_db_bmap_and_contents_equal_the_sources() {
    if !tools() {
        return;
    }
    let mut btree_files = 0;
    for img in images() {
        let fs = open(img, None);
        let sb = fs.superblock();
        let agblocks = sb.field("sb_agblocks").unwrap().value();
        let bs = fs.block_size();
        let raw = std::fs::read(img.dir.join(&img.top_raw)).unwrap();
        let mapped: Vec<(&String, &Entry, u64)> = img
            .tree
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Entry::File(_) | Entry::Reserved(_) | Entry::Dir | Entry::Symlink(_)
                )
            })
            .map(|(p, e)| (p, e, fs.lookup(p.as_bytes()).unwrap()))
            // local forks have no block map
            .filter(|&(_, _, ino)| {
                fs.node_report(ino)
                    .unwrap()
                    .field("di_format")
                    .unwrap()
                    .value()
                    != 1
            })
            .collect();
        let inos: Vec<u64> = mapped.iter().map(|m| m.2).collect();
        let bmaps = db_bmaps(&img.dir, &img.top_raw, &inos);
        for ((path, entry, ino), theirs) in mapped.into_iter().zip(bmaps) {
            let what = format!("{} {path}", img.variant.name);
            let r = fs.node_report(ino).unwrap();
            let format = r.field("di_format").unwrap().value();
            let mut data = Vec::new();
            let mut meta = 0u64;
            let mut problems = Vec::new();
            fs.runs(ino, &mut problems, &mut |run| {
                match run.kind {
                    RunKind::Meta { .. } => meta += 1,
                    k => data.push((
                        run.logical / bs,
                        run.physical / bs,
                        run.len / bs,
                        k == RunKind::Unwritten,
                    )),
                }
                ControlFlow::Continue(())
            })
            .unwrap();
            assert!(problems.is_empty(), "{what}: {problems:?}");
            let want: Vec<(u64, u64, u64, bool)> = theirs
                .iter()
                .map(|&(off, ag, agb, n, f)| (off, ag * agblocks + agb, n, f))
                .collect();
            assert_eq!(data, want, "{what}: extents");
            if format == 3 {
                btree_files += 1;
                // Map blocks: what the inode counts beyond its data.
                let blocks: u64 = want.iter().map(|e| e.2).sum();
                let nblocks = r.field("di_nblocks").unwrap().value();
                assert_eq!(meta, nblocks - blocks, "{what}: map blocks");
                assert!(meta > 0, "{what}");
            } else {
                assert_eq!(meta, 0, "{what}");
            }
            // The bytes: whole file against the source, and the first
            // block of each extent against the raw image where xfs_db maps it.
            let size = fs.metadata(ino).unwrap().size;
            let mut buf = vec![0u8; size as usize];
            let n = fs.read_file(ino, 0, &mut buf).unwrap();
            assert_eq!(n as u64, size, "{what}");
            if let Entry::File(body) = entry {
                assert_eq!(&buf, body, "{what}: content");
            }
            for &(off, phys, len, unwritten) in &want {
                if unwritten || off * bs >= size {
                    continue;
                }
                let take = (len * bs).min(size - off * bs) as usize;
                let at = (phys * bs) as usize;
                assert_eq!(
                    &buf[(off * bs) as usize..][..take],
                    &raw[at..at + take],
                    "{what}: extent at {off}"
                );
            }
            // Reading from the middle, across an extent boundary.
            if size > 10_000 {
                let mut mid = vec![0u8; 9000];
                let n = fs.read_file(ino, size - 9000 + 17, &mut mid).unwrap();
                assert_eq!(n, 9000 - 17);
                assert_eq!(
                    &mid[..n],
                    &buf[(size - 9000 + 17) as usize..],
                    "{what}: tail"
                );
            }
        }
    }
    assert!(btree_files > 0, "no B+tree block map in any image");
}

#[test]
fn symlinks_local_and_remote() {
    if !tools() {
        return;
    }
    let mut remote = 0;
    for img in images() {
        let fs = open(img, None);
        for (path, entry) in &img.tree {
            let Entry::Symlink(target) = entry else {
                continue;
            };
            let ino = fs.lookup(path.as_bytes()).unwrap();
            assert_eq!(
                &fs.read_link(ino).unwrap(),
                target,
                "{} {path}",
                img.variant.name
            );
            let core = db_pairs(&xfs_db(
                &img.dir,
                &img.top_raw,
                &[&format!("inode {ino}"), "print core.format"],
            ));
            let ours = fs
                .node_report(ino)
                .unwrap()
                .field("di_format")
                .unwrap()
                .value();
            assert_eq!(core[0].1.split(' ').next().unwrap(), ours.to_string());
            if ours == 2 {
                remote += 1;
            }
        }
        // Not a symlink: an error, not bytes.
        assert!(fs.read_link(fs.lookup(b"/files/f1").unwrap()).is_err());
    }
    assert!(remote >= 4, "{remote} remote symlinks (v4 images)");
}

#[test]
fn attributes_in_every_form_as_of_each_layer() {
    if !tools() {
        return;
    }
    let mut forms = BTreeSet::new();
    for img in images() {
        let v5 = img.variant.name.starts_with("v5");
        for layer in 0..2 {
            let fs = open(img, Some(layer));
            let what = format!("{} layer {layer}", img.variant.name);
            let attrs = |p: &str| {
                let mut problems = Vec::new();
                let a = fs
                    .xattrs(fs.lookup(p.as_bytes()).unwrap(), &mut problems)
                    .unwrap();
                assert!(problems.is_empty(), "{p}: {problems:?}");
                a
            };
            if layer == 0 {
                assert!(
                    attrs("/files/f1").is_empty() && attrs(ATTR_NODE.0).is_empty(),
                    "{what}"
                );
                continue;
            }
            for (path, ns, name, len) in ATTRS {
                let prefix = match *ns {
                    "-s" => "security.",
                    "-r" => "trusted.",
                    _ => "user.",
                };
                let full = format!("{prefix}{name}");
                let got = attrs(path);
                let a = got
                    .iter()
                    .find(|a| a.name == full.as_bytes())
                    .unwrap_or_else(|| panic!("{what} {path}: no {full} in {got:?}"));
                assert_eq!(
                    a.value,
                    vec![b'v'; remote_len(img.variant, *len)],
                    "{what} {path} {full}"
                );
            }
            for (path, n) in [ATTR_LEAF, ATTR_NODE] {
                let got = attrs(path);
                let names: BTreeSet<Vec<u8>> = got.iter().map(|a| a.name.clone()).collect();
                let want: BTreeSet<Vec<u8>> = (0..n)
                    .map(|i| format!("user.attribute-number-{i:04}").into_bytes())
                    .collect();
                assert_eq!(names, want, "{what} {path}");
                assert!(got.iter().all(|a| a.value == vec![b'v'; 30]));
            }
            // The forms, as xfs_db sees them: f1 short-form, f3 a leaf,
            // f4 a node, f2 a leaf with a remote value.
            let form = |p: &str| -> (String, String) {
                let ino = fs.lookup(p.as_bytes()).unwrap();
                let core = db_pairs(&xfs_db(
                    &img.dir,
                    &img.top_raw,
                    &[&format!("inode {ino}"), "print core.aformat"],
                ));
                let magic = if core[0].1.starts_with("1 ") {
                    String::new()
                } else {
                    let hdr = db_pairs(&xfs_db(
                        &img.dir,
                        &img.top_raw,
                        &[&format!("inode {ino}"), "ablock 0", "print"],
                    ));
                    hdr.iter()
                        .find(|(k, _)| k.starts_with("hdr.") && k.ends_with(".magic"))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                (core[0].1.clone(), magic)
            };
            assert!(form("/files/f1").0.starts_with("1 "), "{what}");
            let leaf = if v5 { "0x3bee" } else { "0xfbee" };
            let node = if v5 { "0x3ebe" } else { "0xfebe" };
            for p in [ATTR_LEAF.0, ATTR_NODE.0, "/files/f2"] {
                let m = form(p).1;
                assert!(m == leaf || m == node, "{what} {p}: {m}");
                forms.insert((p, if m == leaf { "leaf" } else { "node" }));
            }
        }
    }
    // Every form was read somewhere: 40 small attributes make a leaf of
    // a 4K block and a node of 1K ones; 400 make a node everywhere.
    assert!(forms.contains(&(ATTR_LEAF.0, "leaf")), "{forms:?}");
    assert!(forms.contains(&(ATTR_NODE.0, "node")), "{forms:?}");
    assert!(forms.contains(&("/files/f2", "leaf")), "{forms:?}");
}
