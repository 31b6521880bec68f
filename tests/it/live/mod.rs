//! Live snapshots written by a real kernel: the Debian kernel boots under
//! qemu with a busybox initramfs and makes a chain the way a running VM
//! does, so the journal, its transactions and the layers come from the
//! kernel, not from a model of it. One boot makes every chain of the run
//! (built once, shared by the tests below):
//!
//! - `main0..main4.qcow2` (/dev/vda, ext4 with metadata_csum, 64bit:
//!   journal checksum v3, 64-bit tags): layer 1 a package-upgrade-like
//!   change set cleanly unmounted; layer 2 fsync-only changes snapshotted
//!   while mounted (a dirty journal of several transactions, with
//!   revokes and an orphan); layer 3 more changes and a clean unmount;
//!   layer 4 fsync-only changes and a power-off.
//! - `v1_0, v1_1` (/dev/vdb, ext4 without metadata_csum or 64bit, 1 KiB
//!   blocks, mounted with journal_checksum: checksum v1, 32-bit tags;
//!   with an orphan file and a file unlinked while open), dirty at
//!   power-off.
//! - `fc0, fc1` (/dev/vdc, fast_commit), fsyncs that make fast commits,
//!   dirty at power-off.
//!
//! The oracles: e2fsck -E journal_only on a flattened copy then debugfs
//! (the replayed view), debugfs on the flattened copy (`--no-replay`),
//! `debugfs logdump -a` (the journal listing), and the change log the
//! script below is known to make (the diff's letters).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::util::*;

mod bad;
mod boot;
mod diff;
mod gen;
mod replay;
mod tui;

/// The chains of the run, and where the oracles' copies go.
pub struct Live {
    pub dir: PathBuf,
    /// `main0.qcow2` .. `main4.qcow2`.
    pub main: Vec<String>,
    pub v1: Vec<String>,
    pub fc: Vec<String>,
    /// Chains of generated changes (see [`gen`]), layers as the main one:
    /// 1 and 3 unmounted, 2 and 4 dirty.
    pub gens: Vec<Vec<String>>,
    /// Flattened copies made so far: (image, replayed by e2fsck) -> raw.
    flats: Mutex<BTreeMap<(String, bool), PathBuf>>,
}

static LIVE: OnceLock<Result<Option<Live>, String>> = OnceLock::new();

/// The chains, booting the kernel on first use; `None` (skipped) without
/// the tools outside CI. A failed build fails every test that needs it,
/// without booting again.
pub fn live() -> Option<&'static Live> {
    let built = LIVE.get_or_init(|| {
        std::panic::catch_unwind(build).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into())
        })
    });
    match built {
        Ok(l) => l.as_ref(),
        Err(e) => panic!("building the kernel-written chains failed: {e}"),
    }
}

fn tools() -> bool {
    [
        "qemu-system-x86_64",
        "qemu-img",
        "busybox",
        "cpio",
        "mke2fs",
        "e2fsck",
        "debugfs",
    ]
    .iter()
    .all(|t| need(t))
}

fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .map(|j| ((j * 31 + seed * 17 + j / 7) % 251) as u8)
        .collect()
}

fn write(root: &Path, p: &str, body: &[u8]) {
    let path = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn main_tree(root: &Path) {
    for i in 0..20 {
        write(
            root,
            &format!("/usr/lib/pkg/lib{i:02}.so"),
            &pattern(3000 + i * 500, i),
        );
    }
    write(root, "/usr/bin/tool1", b"tool1 v1\n");
    write(root, "/usr/bin/tool2", b"tool2 v1\n");
    for (f, body) in [
        ("pkg.conf", "pkg\n"),
        ("keep.conf", "keep\n"),
        ("owner.conf", "owner\n"),
        ("layer", "0\n"),
    ] {
        write(root, &format!("/etc/{f}"), body.as_bytes());
    }
    for f in ["a", "b", "sub/c", "sub/d"] {
        write(root, &format!("/var/lib/old/{f}"), f.as_bytes());
    }
    write(root, "/opt/app/bin/run", b"#!/bin/sh\n");
    write(root, "/opt/app/share/data.txt", b"data\n");
    write(root, "/opt/app/share/more/x.txt", b"x\n");
    write(root, "/home/user/doc.txt", b"doc\n");
    write(root, "/home/user/big.bin", &pattern(200_000, 99));
    write(root, "/srv/linkme.txt", b"link me\n");
    std::fs::create_dir_all(root.join("tmp")).unwrap();
}

fn small_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (p, b) in files {
        write(root, p, b);
    }
}

/// The guest's script. `fs FILE` fsyncs FILE (busybox has no fsync: dd
/// with conv=fsync opens and fsyncs it), which commits the running
/// transaction with everything before it.
const SCRIPT: &str = r#"set -e
fs() { dd if=/dev/null of="$1" conv=notrunc,fsync 2>/dev/null; }
replace() { printf '%s\n' "$2" > "$1.tmp"; mv "$1.tmp" "$1"; }
snap() { echo; echo "@@SNAP $1@@"; read ack; }
M=/mnt
OPTS=noatime,commit=600
mkdir -p /v1 /fc
# ---- layer 1: a package upgrade, then a clean unmount
mount -t ext4 -o $OPTS /dev/vda $M
for i in 00 01 02 03 04 05 06 07 08 09; do replace $M/usr/lib/pkg/lib$i.so "lib$i version 2"; done
replace $M/usr/bin/tool1 "tool1 v2"
mkdir -p $M/usr/share/newpkg/doc
for f in README COPYING doc/manual.txt; do echo "newpkg $f" > $M/usr/share/newpkg/$f; done
rm -rf $M/var/lib/old
chmod 600 $M/etc/pkg.conf
chown 1000:1000 $M/etc/owner.conf
ln $M/home/user/doc.txt $M/home/user/doc-link.txt
ln -s /etc/pkg.conf $M/etc/pkg.link
mv $M/opt/app $M/opt/app2
echo scratch > $M/tmp/scratch; rm $M/tmp/scratch
echo 1 > $M/etc/layer
umount $M
#GEN1
snap 1
# ---- layer 2: three fsynced transactions, snapshot while mounted
mount -t ext4 -o $OPTS /dev/vda $M
for i in 10 11 12 13 14; do replace $M/usr/lib/pkg/lib$i.so "lib$i version 3"; done
mkdir $M/srv/new; for i in 1 2 3; do echo "new $i" > $M/srv/new/file$i; done
mkdir $M/srv/tmpdir; for i in 1 2 3 4 5 6 7 8; do echo "t $i" > $M/srv/tmpdir/t$i; done
echo 2a > $M/etc/layer; fs $M/etc/layer
rm $M/srv/linkme.txt
mv $M/usr/bin/tool2 $M/usr/bin/tool2-renamed
chmod 755 $M/etc/keep.conf
rm -rf $M/srv/tmpdir
echo t2 > $M/tmp/t2; rm $M/tmp/t2
exec 3< $M/home/user/big.bin
rm $M/home/user/big.bin
echo 2b > $M/etc/layer; fs $M/etc/layer
mv $M/usr/share/newpkg $M/usr/share/newpkg2
echo 2 > $M/etc/layer; fs $M/etc/layer
# the other disks: checksum v1 and fast commits, fsync only
mount -t ext4 -o noatime,commit=600,journal_checksum /dev/vdb /v1
mkdir /v1/v1dir; for i in 1 2 3; do echo "v1 $i" > /v1/v1dir/f$i; done
rm /v1/gone.txt
exec 4< /v1/held.bin
rm /v1/held.bin
echo changed > /v1/keep.txt; fs /v1/keep.txt
mv /v1/v1dir /v1/v1moved
echo again > /v1/keep.txt; fs /v1/keep.txt
mount -t ext4 -o noatime,commit=600 /dev/vdc /fc
echo one > /fc/one.txt; fs /fc/one.txt
echo more >> /fc/base.txt; fs /fc/base.txt
echo two > /fc/two.txt; fs /fc/two.txt
exec 5< /fc/held.bin
rm /fc/held.bin
echo three > /fc/three.txt; fs /fc/three.txt
#GEN2
snap 2
# ---- layer 3: more changes, then a clean unmount
for i in 15 16 17 18 19; do replace $M/usr/lib/pkg/lib$i.so "lib$i version 4"; done
rm -rf $M/srv/new
mv $M/opt/app2/share $M/opt/share-moved
echo 3 > $M/etc/layer
exec 3<&-
umount $M
#GEN3
snap 3
# ---- layer 4: two fsynced transactions, then the power goes
mount -t ext4 -o $OPTS /dev/vda $M
mkdir $M/l4; echo a > $M/l4/a; echo b > $M/l4/b
replace $M/usr/bin/tool1 "tool1 v4"
chown 0:0 $M/etc/owner.conf
ln $M/etc/keep.conf $M/etc/keep-hard
rm $M/home/user/doc-link.txt
echo 4a > $M/etc/layer; fs $M/etc/layer
mv $M/opt/app2 $M/opt/app3
echo 4 > $M/etc/layer; fs $M/etc/layer
#GEN4
echo "@@END 0@@"
echo b > /proc/sysrq-trigger
"#;

/// What the script changes from each layer of the main chain to the
/// next, in path terms: (letter, path). Replaced files are `M`; moved
/// directories move everything under them.
pub fn intended(to: usize) -> BTreeSet<(char, String)> {
    let mut s = BTreeSet::new();
    let mut e = |c: char, p: &str| {
        s.insert((c, p.to_owned()));
    };
    match to {
        1 => {
            for i in 0..10 {
                e('M', &format!("/usr/lib/pkg/lib{i:02}.so"));
            }
            e('M', "/usr/bin/tool1");
            for p in [
                "/usr/share",
                "/usr/share/newpkg",
                "/usr/share/newpkg/README",
                "/usr/share/newpkg/COPYING",
                "/usr/share/newpkg/doc",
                "/usr/share/newpkg/doc/manual.txt",
                "/home/user/doc-link.txt",
                "/etc/pkg.link",
            ] {
                e('A', p);
            }
            for p in ["", "/a", "/b", "/sub", "/sub/c", "/sub/d"] {
                e('D', &format!("/var/lib/old{p}"));
            }
            for p in [
                "/etc/pkg.conf",
                "/etc/owner.conf",
                "/home/user/doc.txt",
                "/etc/layer",
            ] {
                e('M', p);
            }
            for p in [
                "",
                "/bin",
                "/bin/run",
                "/share",
                "/share/data.txt",
                "/share/more",
                "/share/more/x.txt",
            ] {
                e('R', &format!("/opt/app2{p}"));
            }
        }
        2 => {
            for i in 10..15 {
                e('M', &format!("/usr/lib/pkg/lib{i}.so"));
            }
            for p in [
                "/srv/new",
                "/srv/new/file1",
                "/srv/new/file2",
                "/srv/new/file3",
            ] {
                e('A', p);
            }
            e('D', "/srv/linkme.txt");
            e('D', "/home/user/big.bin");
            e('R', "/usr/bin/tool2-renamed");
            e('M', "/etc/keep.conf");
            e('M', "/etc/layer");
            for p in ["", "/README", "/COPYING", "/doc", "/doc/manual.txt"] {
                e('R', &format!("/usr/share/newpkg2{p}"));
            }
        }
        3 => {
            for i in 15..20 {
                e('M', &format!("/usr/lib/pkg/lib{i}.so"));
            }
            for p in [
                "/srv/new",
                "/srv/new/file1",
                "/srv/new/file2",
                "/srv/new/file3",
            ] {
                e('D', p);
            }
            for p in ["", "/data.txt", "/more", "/more/x.txt"] {
                e('R', &format!("/opt/share-moved{p}"));
            }
            e('M', "/etc/layer");
        }
        4 => {
            for p in ["/l4", "/l4/a", "/l4/b", "/etc/keep-hard"] {
                e('A', p);
            }
            for p in [
                "/usr/bin/tool1",
                "/etc/owner.conf",
                "/etc/keep.conf",
                "/home/user/doc.txt",
                "/etc/layer",
            ] {
                e('M', p);
            }
            e('D', "/home/user/doc-link.txt");
            for p in ["", "/bin", "/bin/run"] {
                e('R', &format!("/opt/app3{p}"));
            }
        }
        _ => unreachable!(),
    }
    s
}

/// A base image made by mke2fs from `tree`, as qcow2 `name`.
fn base(dir: &Path, name: &str, tree: &Path, size: &str, mkfs: &[&str]) {
    let raw = format!("{name}.raw");
    let mut args = vec!["mke2fs", "-q", "-F"];
    args.extend(mkfs);
    args.extend([
        "-E",
        "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
        "-d",
    ]);
    args.push(tree.to_str().unwrap());
    args.extend([raw.as_str(), size]);
    sh(dir, &args);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            &raw,
            &format!("{name}.qcow2"),
        ],
    );
    std::fs::remove_file(dir.join(raw)).unwrap();
}

fn build() -> Option<Live> {
    if !tools() {
        return None;
    }
    let Some(kernel) = boot::kernel() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("no /boot/vmlinuz-* with its modules, and CI=true (see .ci/run)");
        }
        eprintln!("SKIP: no kernel in /boot with modules");
        return None;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tree = dir.join("tree");
    main_tree(&tree);
    base(&dir, "main0", &tree, "64M", &["-t", "ext4", "-b", "4096"]);
    let v1 = dir.join("v1tree");
    let held = pattern(50_000, 7);
    small_tree(
        &v1,
        &[
            ("/keep.txt", b"keep\n"),
            ("/gone.txt", b"gone\n"),
            ("/d/x.txt", b"x\n"),
            ("/held.bin", &held),
        ],
    );
    base(
        &dir,
        "v1_0",
        &v1,
        "16M",
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "^metadata_csum,^64bit,orphan_file",
        ],
    );
    let fc = dir.join("fctree");
    small_tree(&fc, &[("/base.txt", b"base\n"), ("/held.bin", &held)]);
    base(
        &dir,
        "fc0",
        &fc,
        "32M",
        &["-t", "ext4", "-b", "4096", "-O", "fast_commit,orphan_file"],
    );
    for (top, below) in [("main1", "main0"), ("v1_1", "v1_0"), ("fc1", "fc0")] {
        sh(
            &dir,
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                &format!("{below}.qcow2"),
                "-F",
                "qcow2",
                &format!("{top}.qcow2"),
            ],
        );
    }
    // Generated chains on /dev/vdd and on.
    const GENS: usize = 3;
    const OPS: usize = 24;
    let mut script = SCRIPT.to_owned();
    let mut phases = [String::new(), String::new(), String::new(), String::new()];
    for g in 0..GENS {
        let mut rng = gen::Rng(0x9e37_79b9_7f4a_7c15 ^ ((g as u64 + 1) * 0x1234_5678));
        let tree = dir.join(format!("gentree{g}"));
        std::fs::create_dir_all(&tree).unwrap();
        let mut model = gen::Model::base(&tree, &mut rng);
        base(
            &dir,
            &format!("gen{g}_0"),
            &tree,
            "32M",
            &["-t", "ext4", "-b", "4096"],
        );
        sh(
            &dir,
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                &format!("gen{g}_0.qcow2"),
                "-F",
                "qcow2",
                &format!("gen{g}_1.qcow2"),
            ],
        );
        let dev = format!("/dev/vd{}", (b'd' + g as u8) as char);
        let mnt = format!("/g{g}");
        let head = format!("G={mnt}\n");
        let stamp = |n: usize| format!("echo {n} > $G/stamp; fs $G/stamp\n");
        phases[0] += &format!(
            "{head}mkdir -p $G; mount -t ext4 -o $OPTS {dev} $G\n{}umount $G\n",
            model.commands(&mut rng, OPS)
        );
        phases[1] += &format!(
            "{head}mount -t ext4 -o $OPTS {dev} $G\n{}{}",
            model.commands(&mut rng, OPS),
            stamp(2)
        );
        phases[2] += &format!("{head}{}umount $G\n", model.commands(&mut rng, OPS));
        phases[3] += &format!(
            "{head}mount -t ext4 -o $OPTS {dev} $G\n{}{}",
            model.commands(&mut rng, OPS),
            stamp(4)
        );
    }
    for (i, p) in phases.iter().enumerate() {
        script = script.replace(&format!("#GEN{}\n", i + 1), p);
    }
    std::fs::write(dir.join("script.sh"), &script).unwrap();
    let mut disks = vec![
        boot::Disk {
            files: vec!["main0.qcow2".into(), "main1.qcow2".into()],
            snapshots: true,
        },
        boot::Disk {
            files: vec!["v1_0.qcow2".into(), "v1_1.qcow2".into()],
            snapshots: false,
        },
        boot::Disk {
            files: vec!["fc0.qcow2".into(), "fc1.qcow2".into()],
            snapshots: false,
        },
    ];
    for g in 0..GENS {
        disks.push(boot::Disk {
            files: vec![format!("gen{g}_0.qcow2"), format!("gen{g}_1.qcow2")],
            snapshots: true,
        });
    }
    let start = std::time::Instant::now();
    let _console = boot::boot(&dir, &kernel, &script, &mut disks);
    eprintln!(
        "live: booted {} in {:?}",
        kernel.image.display(),
        start.elapsed()
    );
    let mut disks = disks.into_iter().map(|d| d.files);
    let main = disks.next().unwrap();
    assert_eq!(main.len(), 5, "four layers over the base");
    let (v1, fc) = (disks.next().unwrap(), disks.next().unwrap());
    let gens: Vec<Vec<String>> = disks.collect();
    assert!(gens.iter().all(|g| g.len() == 5));
    Some(Live {
        dir,
        main,
        v1,
        fc,
        gens,
        flats: Mutex::default(),
    })
}

impl Live {
    /// `image` (a chain's top) flattened to raw, and with `replayed`, a
    /// copy on which `e2fsck -E journal_only` replayed the journal. Made
    /// once per run.
    pub fn flat(&self, image: &str, replayed: bool) -> PathBuf {
        let mut flats = self.flats.lock().unwrap();
        if let Some(p) = flats.get(&(image.to_owned(), replayed)) {
            return p.clone();
        }
        let stem = image.trim_end_matches(".qcow2");
        let raw = self.dir.join(format!("{stem}.flat.raw"));
        if !raw.exists() {
            sh(
                &self.dir,
                &[
                    "qemu-img",
                    "convert",
                    "-O",
                    "raw",
                    image,
                    raw.to_str().unwrap(),
                ],
            );
        }
        let out = if replayed {
            let rep = self.dir.join(format!("{stem}.replayed.raw"));
            std::fs::copy(&raw, &rep).unwrap();
            // Exit 1: the filesystem was modified (the journal replayed).
            let o = std::process::Command::new("e2fsck")
                .args(["-y", "-E", "journal_only", rep.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                matches!(o.status.code(), Some(0 | 1)),
                "e2fsck -E journal_only {image}: {o:?}"
            );
            rep
        } else {
            raw
        };
        flats.insert((image.to_owned(), replayed), out.clone());
        out
    }
}
