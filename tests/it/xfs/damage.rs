//! Damaged XFS images, structure by structure: each test copies a built
//! image, breaks one structure (fixing its CRC, so the damage is the only
//! one), checks that xfs_repair -n sees it too, and that layerscope gives a
//! clear error naming the structure and offset, keeps going where the rest
//! is still readable, and neither panics nor hangs.
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::Duration;

use layerscope::fs::FsError;

use super::*;

/// A copy of a variant's base image to damage.
struct Damaged {
    dir: PathBuf,
    name: String,
    bytes: Vec<u8>,
}

impl Damaged {
    fn of(variant: &str, tag: &str) -> Damaged {
        let img = images().iter().find(|i| i.variant.name == variant).unwrap();
        Damaged {
            dir: img.dir.clone(),
            name: format!("damaged-{tag}.raw"),
            bytes: std::fs::read(img.dir.join(&img.base_raw)).unwrap(),
        }
    }

    fn be32(&mut self, at: u64, v: u32) {
        self.bytes[at as usize..at as usize + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn be16(&mut self, at: u64, v: u16) {
        self.bytes[at as usize..at as usize + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn be64(&mut self, at: u64, v: u64) {
        self.bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// Recomputes the CRC of the `len`-byte structure at `at` whose CRC
    /// field is at `crc_off` in it (v5 images).
    fn fix_crc(&mut self, at: u64, len: usize, crc_off: usize) {
        let s = &mut self.bytes[at as usize..at as usize + len];
        s[crc_off..crc_off + 4].fill(0);
        let c = crc32c::crc32c(s);
        s[crc_off..crc_off + 4].copy_from_slice(&c.to_le_bytes());
    }

    /// Writes the image; asserts xfs_repair -n finds it damaged.
    fn write(&self, repair_sees_it: bool) -> String {
        std::fs::write(self.dir.join(&self.name), &self.bytes).unwrap();
        // A bound, not a timing assertion: xfs_repair searching a broken
        // disk for superblock copies may take long; a timeout counts as
        // "it sees something wrong".
        let out = Command::new("timeout")
            .args(["-k", "5", "300", "xfs_repair", "-n", &self.name])
            .current_dir(&self.dir)
            .output()
            .unwrap();
        if repair_sees_it {
            assert!(
                !out.status.success(),
                "{}: xfs_repair -n finds nothing wrong: {}",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        self.dir.join(&self.name).to_str().unwrap().to_owned()
    }
}

fn try_open(path: &str) -> Result<Arc<dyn Filesystem>, FsError> {
    let chain = open_chain(path, ChainOptions::default(), &FsOpener).unwrap();
    let reader: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
    layerscope::fs::open(reader)
}

/// Runs `f` on another thread and fails if it takes over a minute (a
/// hang guard, not a timing assertion).
fn guarded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("hung (or panicked) on damaged input")
}

/// Lists directory `dir` of the image at `p` (on another thread, with
/// the hang guard): the names, and the problems met.
fn listed(p: String, dir: u64) -> (Vec<Vec<u8>>, Vec<String>) {
    guarded(move || {
        let fs = try_open(&p).unwrap();
        let mut problems = Vec::new();
        let mut names = Vec::new();
        fs.read_dir(dir, &mut problems, &mut |e| {
            names.push(e.name);
            ControlFlow::Continue(())
        })
        .unwrap();
        (
            names,
            problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
    })
}

/// Geometry of a variant's base image: (block size, AG blocks, sector).
fn geometry(fs: &dyn Filesystem) -> (u64, u64, u64) {
    let sb = fs.superblock();
    let v = |f: &str| sb.field(f).unwrap().value();
    (v("sb_blocksize"), v("sb_agblocks"), v("sb_sectsize"))
}

#[test]
fn impossible_ag_counts_are_refused_naming_the_field() {
    if !tools() {
        return;
    }
    for (count, field) in [(0u32, "sb_agcount"), (u32::MAX, "sb_dblocks")] {
        let mut d = Damaged::of("v5-4k", &format!("agcount-{count}"));
        d.be32(0x58, count);
        d.fix_crc(0, 512, 0xe0);
        let path = d.write(true);
        let e = guarded(move || try_open(&path).err().unwrap().to_string());
        assert!(e.starts_with("corrupt XFS superblock at 0x"), "{e}");
        assert!(e.contains(field), "{count}: {e}");
    }
}

#[test]
fn a_filesystem_larger_than_its_disk_reads_what_is_there() {
    if !tools() {
        return;
    }
    // 2^32 - 1 AGs, the block count to match: a geometry that is
    // consistent but far past the disk. The groups listing costs only the
    // rows asked for, and the AGs past the disk are errors naming them.
    let mut d = Damaged::of("v5-4k", "huge");
    let agblocks = u32::from_be_bytes(d.bytes[0x54..0x58].try_into().unwrap());
    d.be32(0x58, u32::MAX);
    d.be64(0x8, u64::from(u32::MAX) * u64::from(agblocks));
    d.fix_crc(0, 512, 0xe0);
    // Not asked of xfs_repair: it would walk 2^32 AGs.
    let path = d.write(false);
    guarded(move || {
        let fs = try_open(&path).unwrap();
        let sb = fs.superblock();
        assert!(
            sb.problems.iter().any(|p| p.contains("past its end")),
            "{:?}",
            sb.problems
        );
        let t = fs.groups(0, 3).unwrap();
        assert_eq!(t.total, u64::from(u32::MAX));
        assert!(
            t.rows.iter().all(|r| r.cells.len() > 1),
            "the real AGs are whole: {:?}",
            t.rows
        );
        let far = fs.groups(4_000_000_000, 5).unwrap();
        assert_eq!(far.rows.len(), 5);
        for r in &far.rows {
            assert_eq!(r.ok, Some(false));
            assert!(
                r.error
                    .as_deref()
                    .is_some_and(|e| e.contains("past the end of the volume")),
                "{r:?}"
            );
        }
        assert!(fs.groups(u64::MAX - 1, 10).unwrap().rows.is_empty());
        let e = fs
            .group_report(u64::from(u32::MAX) + 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        // The tree is still there.
        assert!(fs.lookup(b"/files/f7").is_ok());
    });
    // A truncated image: the last AGs are gone.
    let mut d = Damaged::of("v5-4k", "truncated");
    let len = d.bytes.len();
    d.bytes.truncate(len / 2);
    let path = d.write(false);
    guarded(move || {
        let fs = try_open(&path).unwrap();
        assert!(fs
            .superblock()
            .problems
            .iter()
            .any(|p| p.contains("past its end")));
        let t = fs.groups(0, 100).unwrap();
        let bad: Vec<_> = t.rows.iter().filter(|r| r.ok == Some(false)).collect();
        assert!(!bad.is_empty() && bad.len() < t.rows.len(), "{:?}", t.rows);
        assert!(
            bad[0]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("corrupt AGF at 0x")),
            "{:?}",
            bad[0]
        );
    });
}

#[test]
fn btree_levels_out_of_bounds_are_reported_per_ag() {
    if !tools() {
        return;
    }
    for (tag, at, level) in [
        ("bno0", 0x1c, 0u32),
        ("bno100", 0x1c, 100),
        ("ino100", 0x18 + 0x1000, 100),
    ] {
        let mut d = Damaged::of("v5-4k", tag);
        // AG 1's AGF (sector 1) or AGI (sector 2): `at` past 0x1000 means
        // the AGI field, offset from the AGI.
        let img = images().iter().find(|i| i.variant.name == "v5-4k").unwrap();
        let (bs, agblocks, sect) = geometry(open(img, Some(0)).as_ref());
        let ag1 = agblocks * bs;
        let (hdr, field) = if at >= 0x1000 {
            (ag1 + 2 * sect, at - 0x1000)
        } else {
            (ag1 + sect, at)
        };
        d.be32(hdr + field, level);
        d.fix_crc(hdr, sect as usize, if at >= 0x1000 { 0x138 } else { 0xd8 });
        let path = d.write(true);
        let msg = guarded(move || {
            let fs = try_open(&path).unwrap();
            let t = fs.groups(0, 4).unwrap();
            assert_eq!(t.rows[0].ok, Some(true), "AG 0 is untouched");
            assert_eq!(t.rows[1].ok, Some(false));
            fs.group_report(1).unwrap().problems.join("\n")
        });
        let name = if at >= 0x1000 {
            "agi_level"
        } else {
            "agf_bnolevel"
        };
        assert!(
            msg.contains(&format!("AG 1: {name}: {level} levels")),
            "{tag}: {msg}"
        );
    }
}

#[test]
fn btree_pointer_cycles_and_shared_blocks_are_walked_once() {
    if !tools() {
        return;
    }
    // A new root for AG 0's by-block free-space tree, in a free-list block:
    // a node whose two pointers both name the old root (a leaf), and a
    // node whose first pointer names itself.
    let base = images().iter().find(|i| i.variant.name == "v5-4k").unwrap();
    let fs = try_open(base.dir.join(&base.base_raw).to_str().unwrap()).unwrap();
    let (bs, _, sect) = geometry(fs.as_ref());
    let r = fs.group_report(0).unwrap();
    let leaf = r.field("agf_bnoroot").unwrap().value();
    let spare = r
        .fields
        .iter()
        .find(|f| f.name == "agfl_bno")
        .unwrap()
        .value();
    let uuid = fs.superblock().field("sb_meta_uuid").unwrap().offset;
    for (tag, ptrs) in [("shared", [leaf, leaf]), ("cycle", [spare, leaf])] {
        let mut d = Damaged::of("v5-4k", tag);
        let at = spare * bs;
        let mut node = vec![0u8; bs as usize];
        node[0..4].copy_from_slice(b"AB3B");
        node[4..6].copy_from_slice(&1u16.to_be_bytes());
        node[6..8].copy_from_slice(&2u16.to_be_bytes());
        node[8..16].fill(0xff);
        node[16..24].copy_from_slice(&(at / 512).to_be_bytes());
        let u = d.bytes[uuid as usize..uuid as usize + 16].to_vec();
        let u = if u.iter().all(|&b| b == 0) {
            d.bytes[0x20..0x30].to_vec()
        } else {
            u
        };
        node[32..48].copy_from_slice(&u);
        // keys (startblock, blockcount) x maxrecs, then pointers.
        let maxrecs = (bs as usize - 56) / 12;
        node[56..60].copy_from_slice(&0u32.to_be_bytes());
        node[64..68].copy_from_slice(&1u32.to_be_bytes());
        for (i, p) in ptrs.iter().enumerate() {
            let o = 56 + maxrecs * 8 + i * 4;
            node[o..o + 4].copy_from_slice(&(*p as u32).to_be_bytes());
        }
        d.bytes[at as usize..(at + bs) as usize].copy_from_slice(&node);
        d.fix_crc(at, bs as usize, 52);
        d.be32(sect + 0x10, spare as u32);
        d.be32(sect + 0x1c, 2);
        d.fix_crc(sect, sect as usize, 0xd8);
        let path = d.write(true);
        let problems = guarded(move || {
            let fs = try_open(&path).unwrap();
            fs.group_report(0).unwrap().problems.join("\n")
        });
        let want = if tag == "shared" {
            "is reached twice"
        } else {
            "reached twice"
        };
        assert!(problems.contains(want), "{tag}: {problems}");
        assert!(
            problems.contains("free-space B+tree (by block) of AG 0"),
            "{tag}: {problems}"
        );
    }
}

/// The first inode of `variant`'s base image, among the protofile's paths,
/// whose data fork has `format` (2 extents, 3 btree, 1 local) and which
/// is a directory or not as asked.
fn inode_with(variant: &str, format: u64, dir: bool) -> (String, u64, u64) {
    let img = images().iter().find(|i| i.variant.name == variant).unwrap();
    let fs = open(img, Some(0));
    for (path, e) in &img.tree {
        if (*e == Entry::Dir) != dir {
            continue;
        }
        let ino = fs.lookup(path.as_bytes()).unwrap();
        let r = fs.node_report(ino).unwrap();
        if r.field("di_format").unwrap().value() == format {
            return (path.clone(), ino, r.offset);
        }
    }
    panic!("{variant}: no inode of format {format}");
}

#[test]
fn block_map_roots_with_bad_levels_or_shared_children() {
    if !tools() {
        return;
    }
    let variant = images()
        .iter()
        .find(|i| {
            let fs = open(i, Some(0));
            i.tree.iter().any(|(p, e)| {
                *e == Entry::Dir
                    && fs
                        .node_report(fs.lookup(p.as_bytes()).unwrap())
                        .unwrap()
                        .field("di_format")
                        .unwrap()
                        .value()
                        == 3
            })
        })
        .unwrap()
        .variant
        .name;
    let (path, ino, at) = inode_with(variant, 3, true);
    let v5 = variant.starts_with("v5");
    let core: u64 = if v5 { 176 } else { 100 };
    let isize = {
        let fs = open(
            images().iter().find(|i| i.variant.name == variant).unwrap(),
            Some(0),
        );
        fs.superblock().field("sb_inodesize").unwrap().value() as usize
    };
    for (tag, level) in [("level0", 0u16), ("level100", 100)] {
        let mut d = Damaged::of(variant, &format!("bmbt-{tag}"));
        d.be16(at + core, level);
        if v5 {
            d.fix_crc(at, isize, 100);
        }
        let p = d.write(true);
        let path2 = path.clone();
        let e = guarded(move || {
            let fs = try_open(&p).unwrap();
            let mut problems = Vec::new();
            let r = fs.read_dir(ino, &mut problems, &mut |_| ControlFlow::Continue(()));
            let _ = fs.lookup(format!("{path2}/entry-00001").as_bytes());
            r.unwrap_err().to_string()
        });
        assert!(
            e.starts_with("corrupt block map B+tree root at 0x")
                && e.contains(&format!("bb_level: inode {ino}: {level} levels")),
            "{tag}: {e}"
        );
    }
    // Two pointers to the same child: the root (one record on these
    // images) given one more record, pointing at its first child. Listing the
    // directory stops at its leaf blocks, inside the first child, so the
    // whole map is walked (runs, as stat and blocks do).
    let numrecs = {
        let img = images().iter().find(|i| i.variant.name == variant).unwrap();
        let bytes = std::fs::read(img.dir.join(&img.base_raw)).unwrap();
        u16::from_be_bytes(bytes[(at + core + 2) as usize..][..2].try_into().unwrap())
    };
    assert!(numrecs >= 1);
    let mut d = Damaged::of(variant, "bmbt-shared");
    let fork = isize - core as usize;
    let maxrecs = (fork - 4) / 16;
    let root = (at + core) as usize;
    let (keys, ptrs) = (root + 4, root + 4 + maxrecs * 8);
    let n = numrecs as usize;
    // A key past the last one (a child covering nothing is skipped), the
    // first pointer again.
    let last = u64::from_be_bytes(d.bytes[keys + (n - 1) * 8..][..8].try_into().unwrap());
    let ptr = d.bytes[ptrs..ptrs + 8].to_vec();
    d.be64((keys + n * 8) as u64, last + 1);
    d.bytes[ptrs + n * 8..ptrs + n * 8 + 8].copy_from_slice(&ptr);
    d.be16(at + core + 2, numrecs + 1);
    if v5 {
        d.fix_crc(at, isize, 100);
    }
    let p = d.write(true);
    let problems = guarded(move || {
        let fs = try_open(&p).unwrap();
        let mut problems = Vec::new();
        fs.runs(ino, &mut problems, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert!(problems.contains("is reached twice"), "{problems}");
}

#[test]
fn directory_blocks_with_a_bad_magic_or_crc_are_skipped_or_flagged() {
    if !tools() {
        return;
    }
    let img = images().iter().find(|i| i.variant.name == "v5-4k").unwrap();
    let fs = open(img, Some(0));
    let dir = fs.lookup(b"/leaf").unwrap();
    let mut first = None;
    let mut all = 0;
    fs.runs(dir, &mut Vec::new(), &mut |r| {
        first.get_or_insert(r.physical);
        ControlFlow::Continue(())
    })
    .unwrap();
    fs.read_dir(dir, &mut Vec::new(), &mut |_| {
        all += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    let block = first.unwrap();
    for tag in ["magic", "crc"] {
        let mut d = Damaged::of("v5-4k", &format!("dir-{tag}"));
        if tag == "magic" {
            d.be32(block, 0x1234_5678);
        } else {
            // A name byte: the CRC no longer matches.
            d.bytes[block as usize + 64 + 9] ^= 0x20;
        }
        let (names, problems) = listed(d.write(true), dir);
        let n = names.len();
        let at = format!("at {block:#x}");
        if tag == "magic" {
            assert!(n > 0 && n < all, "{n} of {all} entries");
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("corrupt directory data block {at}: magic"))),
                "{problems:?}"
            );
        } else {
            assert_eq!(n, all, "a bad CRC is flagged, the entries still listed");
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("directory data block") && p.contains("checksum")),
                "{problems:?}"
            );
        }
    }
}

/// A directory's map problem (here more extents claimed than its fork
/// holds) is reported once, not again for every directory block read
/// (which also spent the directory's bound on problems on copies).
#[test]
fn a_directory_map_problem_is_reported_once_not_per_block() {
    if !tools() {
        return;
    }
    let img = images().iter().find(|i| i.variant.name == "v5-4k").unwrap();
    let fs = open(img, Some(0));
    let dir = fs.lookup(b"/node").unwrap();
    let r = fs.node_report(dir).unwrap();
    assert_eq!(r.field("di_format").unwrap().value(), 2, "extents form");
    let blocks = r.field("di_size").unwrap().value() / 4096;
    assert!(blocks >= 4, "{blocks} directory blocks");
    let mut all = Vec::new();
    fs.read_dir(dir, &mut Vec::new(), &mut |e| {
        all.push(e.name);
        ControlFlow::Continue(())
    })
    .unwrap();
    // The data fork's count: di_nextents, or di_big_nextents (nrext64).
    let recs = r.fields.iter().filter(|f| f.name == "bmx").count() as u64;
    assert!(recs >= 1);
    let mut d = Damaged::of("v5-4k", "dir-nextents");
    let small = r.field("di_nextents").unwrap();
    if small.value() == recs {
        d.be32(small.offset, 0xffff);
    } else {
        let big = r.field("di_big_nextents").unwrap();
        assert_eq!(big.value(), recs);
        d.be64(big.offset, 0xffff);
    }
    d.fix_crc(r.offset, 512, 100);
    let (names, problems) = listed(d.write(true), dir);
    assert_eq!(names, all, "every entry still listed");
    assert!(
        problems.iter().any(|p| p.contains("di_nextents")),
        "{problems:?}"
    );
    let mut once = problems.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), problems.len(), "repeated: {problems:?}");
}

#[test]
fn extents_overlapping_or_past_the_ag_are_skipped_and_named() {
    if !tools() {
        return;
    }
    let img = images().iter().find(|i| i.variant.name == "v5-4k").unwrap();
    let fs = open(img, Some(0));
    let ino = fs.lookup(b"/files/reserved").unwrap();
    let r = fs.node_report(ino).unwrap();
    let recs: Vec<u64> = r
        .fields
        .iter()
        .filter(|f| f.name == "bmx")
        .map(|f| f.offset)
        .collect();
    assert!(recs.len() >= 2, "{recs:?}");
    let at = r.offset;
    for tag in ["overlap", "past-ag"] {
        let mut d = Damaged::of("v5-4k", tag);
        let rec = recs[1] as usize;
        let mut l0 = u64::from_be_bytes(d.bytes[rec..rec + 8].try_into().unwrap());
        let mut l1 = u64::from_be_bytes(d.bytes[rec + 8..rec + 16].try_into().unwrap());
        if tag == "overlap" {
            // startoff 0, like the first extent
            l0 &= !(((1u64 << 54) - 1) << 9);
        } else {
            l1 |= (1 << 21) - 1; // 2^21 - 1 blocks
        }
        d.bytes[rec..rec + 8].copy_from_slice(&l0.to_be_bytes());
        d.bytes[rec + 8..rec + 16].copy_from_slice(&l1.to_be_bytes());
        d.fix_crc(at, 512, 100);
        let p = d.write(true);
        let (runs, problems) = guarded(move || {
            let fs = try_open(&p).unwrap();
            let mut problems = Vec::new();
            let mut runs = 0;
            fs.runs(ino, &mut problems, &mut |_| {
                runs += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
            (
                runs,
                problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
        });
        assert_eq!(runs, recs.len() - 1, "{tag}: the bad extent is skipped");
        let want = if tag == "overlap" {
            "overlaps the previous one"
        } else {
            "runs past the AG"
        };
        assert!(
            problems.iter().any(|p| p
                .starts_with(&format!("corrupt extent record at {:#x}", recs[1]))
                && p.contains(want)),
            "{tag}: {problems:?}"
        );
    }
}

#[test]
fn fork_offset_past_the_inode_and_short_form_count_past_its_size() {
    if !tools() {
        return;
    }
    let img = images().iter().find(|i| i.variant.name == "v5-4k").unwrap();
    let fs = open(img, Some(0));
    let f1 = fs.lookup(b"/files/f1").unwrap();
    let f1_at = fs.node_report(f1).unwrap().offset;
    let special = fs.lookup(b"/special").unwrap();
    let sp_at = fs.node_report(special).unwrap().offset;
    let mut d = Damaged::of("v5-4k", "forkoff");
    d.bytes[f1_at as usize + 0x52] = 255;
    d.fix_crc(f1_at, 512, 100);
    let p = d.write(true);
    let (meta, xattr) = guarded(move || {
        let fs = try_open(&p).unwrap();
        (fs.metadata(f1).is_ok(), {
            // The damage is an error or a problem, never attributes.
            let mut problems = Vec::new();
            match fs.xattrs(f1, &mut problems) {
                Err(e) => e.to_string(),
                Ok(a) => {
                    assert!(a.is_empty());
                    problems
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                }
            }
        })
    });
    assert!(meta, "the core is still readable");
    assert_eq!(
        xattr,
        format!(
            "corrupt inode at {:#x}: di_forkoff: inode {f1}: the attribute fork at byte 2040 of the literal area is past its 336 bytes",
            f1_at + 0x52
        )
    );
    let mut d = Damaged::of("v5-4k", "sf-count");
    d.bytes[sp_at as usize + 176] = 200;
    d.fix_crc(sp_at, 512, 100);
    let (names, problems) = listed(d.write(true), special);
    assert!(
        names.len() >= 2 + 5,
        "the entries that fit are listed: {names:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with(&format!("corrupt short-form directory at {:#x}: count: inode {special}: the header counts 200 entries", sp_at + 176))),
        "{problems:?}"
    );
}

#[test]
fn a_wrong_inode_magic_is_an_error_for_that_inode_only() {
    if !tools() {
        return;
    }
    let img = images().iter().find(|i| i.variant.name == "v4-1k").unwrap();
    let fs = open(img, Some(0));
    let f = fs.lookup(b"/files/f5").unwrap();
    let at = fs.node_report(f).unwrap().offset;
    let mut d = Damaged::of("v4-1k", "imagic");
    d.be16(at, 0);
    let p = d.write(true);
    let (e, listed) = guarded(move || {
        let fs = try_open(&p).unwrap();
        let e = fs.metadata(f).unwrap_err().to_string();
        let mut n = 0;
        fs.read_dir(fs.lookup(b"/files").unwrap(), &mut Vec::new(), &mut |_| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        (e, n)
    });
    assert_eq!(
        e,
        format!("corrupt inode at {at:#x}: di_magic: inode {f}: 0x0000, expected 0x494e (IN)")
    );
    assert!(listed > 10);
}

/// mkfs.xfs 6.1 writes a v5 symlink too long for its inode without the
/// block header the kernel wants: whatever xfs_repair says about it, we
/// must agree (an error naming the block, or the target).
#[test]
fn remote_symlinks_as_mkfs_writes_them_on_v5() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let target = "x/".repeat(300);
    std::fs::write(
        d.join("proto"),
        format!("/dev/null\n0 0\nd--755 0 0\nlink l--777 0 0 {target}\n$\n"),
    )
    .unwrap();
    sh(d, &["truncate", "-s", "64M", "v5.raw"]);
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-p", "proto", "v5.raw"])
        .current_dir(d)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let clean = Command::new("xfs_repair")
        .args(["-n", "v5.raw"])
        .current_dir(d)
        .status()
        .unwrap()
        .success();
    let fs = try_open(d.join("v5.raw").to_str().unwrap()).unwrap();
    let ino = fs.lookup(b"/link").unwrap();
    match fs.read_link(ino) {
        Ok(t) => {
            assert!(clean, "xfs_repair flags the symlink, we read it");
            assert_eq!(t, target.as_bytes());
        }
        Err(e) => {
            assert!(!clean, "xfs_repair finds it clean, we fail: {e}");
            let e = e.to_string();
            assert!(
                e.starts_with("corrupt symlink block at 0x") && e.contains("sl_magic"),
                "{e}"
            );
        }
    }
}
