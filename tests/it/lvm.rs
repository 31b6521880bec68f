//! LVM2 against LVM's own tools. The PVs are made by `pvcreate` on loop
//! devices over two partitions of a GPT disk image; `vgcreate` and
//! `lvcreate` (a linear LV in two segments across both PVs, and a `-i2`
//! striped LV) write real metadata, with activation off because
//! device-mapper is not available. `lvs`/`pvs` report where each LV's
//! extents are; this test builds the LVs' bytes by copying PV extents as
//! they say (its own small mapper, from their numbers), writes ext4 into
//! them, and then layerscope reading the disk through `--volume vg/lv`
//! must equal dumpe2fs/debugfs on those bytes, and its LV list must equal
//! `lvs`. Then the metadata is edited (CRCs recomputed) into every bad
//! case of issue 12: each a clear problem naming the VG and LV.
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use layerscope::volume::lvm::label::{calc_crc, INITIAL_CRC};
use serde_json::Value;

use crate::util::*;
use crate::volumes::{sfdisk, sparse};

const M: u64 = 1 << 20;
/// Partitions: (start sector, sectors).
const P2: (u64, u64) = (4096, 57344 * 2);
const P3: (u64, u64) = (118784, 40960 * 2);

/// Loop devices attached for the test, detached when dropped.
struct Loops(Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for l in &self.0 {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

/// Whether loop devices can be attached here (a container may lack
/// them): under CI the test must not skip.
fn attach(
    dir: &Path,
    image: &str,
    (start, sectors): (u64, u64),
    loops: &mut Loops,
) -> Option<String> {
    let out = Command::new("losetup")
        .args([
            "-f",
            "--show",
            "-o",
            &(start * 512).to_string(),
            "--sizelimit",
            &(sectors * 512).to_string(),
            image,
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("losetup cannot attach a loop device, and CI=true: {why}");
        }
        eprintln!("SKIP: no loop devices: {why}");
        return None;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    loops.0.push(dev.clone());
    Some(dev)
}

/// An LVM command limited to `devices`, without activation, udev, the
/// devices file or backups (nothing outside the test is touched).
fn lvm(devices: &[String], args: &[&str]) -> Vec<u8> {
    let accept: Vec<String> = devices.iter().map(|d| format!("\"a|^{d}$|\"")).collect();
    let config = format!(
        "global {{ activation = 0 }} devices {{ filter = [ {}, \"r|.*|\" ] obtain_device_list_from_udev = 0 use_devicesfile = 0 }} backup {{ backup = 0 archive = 0 }}",
        accept.join(", ")
    );
    let out = Command::new(args[0])
        .args(&args[1..])
        .args(["--config", &config])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn report(devices: &[String], args: &[&str], kind: &str) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&lvm(devices, args)).unwrap();
    v["report"][0][kind].as_array().unwrap().clone()
}

fn num(v: &Value) -> u64 {
    v.as_str().unwrap().trim().parse().unwrap()
}

/// Where each LV's bytes are, from `lvs`/`pvs`: (LV offset, disk offset,
/// length) pieces, striped segments cut at the stripe size.
fn lv_pieces(segs: &[&Value], pv_at: &BTreeMap<String, u64>, extent: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for s in segs {
        let lv_at = num(&s["seg_start_pe"]) * extent;
        let len = num(&s["seg_size_pe"]) * extent;
        // "/dev/loop1:0-19 /dev/loop2:0-19": one range per stripe.
        let areas: Vec<u64> = s["seg_pe_ranges"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .map(|r| {
                let (dev, range) = r.rsplit_once(':').unwrap();
                let first: u64 = range.split('-').next().unwrap().parse().unwrap();
                pv_at[dev] + first * extent
            })
            .collect();
        let n = areas.len() as u64;
        let chunk = if n == 1 { len } else { num(&s["stripe_size"]) };
        let mut k = 0;
        while k * chunk < len {
            let (stripe, row) = (k % n, k / n);
            out.push((
                lv_at + k * chunk,
                areas[stripe as usize] + row * chunk,
                chunk.min(len - k * chunk),
            ));
            k += 1;
        }
    }
    out
}

/// Copies `flat` (an LV's bytes) into `disk` at the LV's pieces.
fn write_lv(dir: &Path, disk: &str, flat: &str, pieces: &[(u64, u64, u64)]) {
    let bytes = std::fs::read(dir.join(flat)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(disk))
        .unwrap();
    for &(lv, at, len) in pieces {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&bytes[lv as usize..(lv + len) as usize])
            .unwrap();
    }
}

/// Rewrites the metadata text of the PV at `pv` in `image`: `edit` gets
/// the text; the new one goes right after the area header, with its seqno
/// raised so it is the newest, and both CRCs recomputed.
fn edit_metadata(dir: &Path, image: &str, pv: u64, edit: &dyn Fn(&str) -> String) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(image))
        .unwrap();
    let mda = pv + 4096;
    let mut h = vec![0u8; 512];
    f.seek(SeekFrom::Start(mda)).unwrap();
    f.read_exact(&mut h).unwrap();
    assert_eq!(&h[4..20], b" LVM2 x[5A%r0N*>");
    let area = u64::from_le_bytes(h[32..40].try_into().unwrap());
    let off = u64::from_le_bytes(h[40..48].try_into().unwrap());
    let size = u64::from_le_bytes(h[48..56].try_into().unwrap());
    let mut text = vec![0u8; size as usize];
    f.seek(SeekFrom::Start(mda + off)).unwrap();
    f.read_exact(&mut text).unwrap();
    let text = String::from_utf8_lossy(&text)
        .trim_end_matches('\0')
        .to_owned();
    let seq = text
        .split("seqno = ")
        .nth(1)
        .unwrap()
        .split('\n')
        .next()
        .unwrap()
        .to_owned();
    let bumped = text.replacen(
        &format!("seqno = {seq}"),
        &format!("seqno = {}", seq.parse::<u64>().unwrap() + 100),
        1,
    );
    let mut new = edit(&bumped).into_bytes();
    new.push(0);
    assert!(
        512 + new.len() as u64 <= area,
        "the new text does not fit the area"
    );
    f.seek(SeekFrom::Start(mda + 512)).unwrap();
    f.write_all(&new).unwrap();
    h[40..48].copy_from_slice(&512u64.to_le_bytes());
    h[48..56].copy_from_slice(&(new.len() as u64).to_le_bytes());
    h[56..60].copy_from_slice(&calc_crc(INITIAL_CRC, &new).to_le_bytes());
    let crc = calc_crc(INITIAL_CRC, &h[4..]);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    f.seek(SeekFrom::Start(mda)).unwrap();
    f.write_all(&h).unwrap();
}

/// In the section of LV `lv`, the first `from` replaced by `to`.
fn in_lv(text: &str, lv: &str, from: &str, to: &str) -> String {
    let at = text
        .find(&format!("\n{lv} {{\n"))
        .unwrap_or_else(|| panic!("no LV {lv}"));
    let rel = text[at..]
        .find(from)
        .unwrap_or_else(|| panic!("no {from:?} in {lv}"));
    let mut out = text.to_owned();
    out.replace_range(at + rel..at + rel + from.len(), to);
    out
}

#[test]
fn linear_and_striped_lvs_equal_lvm_and_e2fsprogs() {
    let tools = [
        "losetup", "pvcreate", "vgcreate", "lvcreate", "lvextend", "lvs", "pvs", "sfdisk",
        "mke2fs", "dumpe2fs", "debugfs", "qemu-img", "qemu-io", "blkid",
    ];
    if !tools.iter().all(|t| need(t)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sparse(dir, "disk0.raw", 128 * M);
    sfdisk(
        dir,
        "disk0.raw",
        &format!(
            "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n\
             start={}, size={}, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=\"pv a\"\n\
             start={}, size={}, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=\"pv b\"\n",
            P2.0, P2.1, P3.0, P3.1
        ),
    );
    let vg = format!("lsvg{}", std::process::id());
    let mut loops = Loops(Vec::new());
    let Some(a) = attach(dir, "disk0.raw", P2, &mut loops) else {
        return;
    };
    let Some(b) = attach(dir, "disk0.raw", P3, &mut loops) else {
        return;
    };
    let devs = vec![a.clone(), b.clone()];
    // PV a has a 12 MiB metadata area: room for the 10 MiB text below.
    lvm(&devs, &["pvcreate", "-q", "--metadatasize", "12m", &a]);
    lvm(&devs, &["pvcreate", "-q", &b]);
    lvm(&devs, &["vgcreate", "-q", "-s", "1m", &vg, &a, &b]);
    lvm(
        &devs,
        &[
            "lvcreate", "-q", "-an", "-Zn", "-L", "20m", "-n", "lin", &vg, &a,
        ],
    );
    lvm(
        &devs,
        &[
            "lvcreate", "-q", "-an", "-Zn", "-L", "4m", "-n", "gap", &vg, &a,
        ],
    );
    lvm(
        &devs,
        &["lvextend", "-q", "-L", "32m", &format!("{vg}/lin"), &b],
    );
    lvm(
        &devs,
        &[
            "lvcreate", "-q", "-an", "-Zn", "-i", "2", "-I", "64k", "-L", "16m", "-n", "str", &vg,
        ],
    );
    let segs = report(
        &devs,
        &["lvs", "-a", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size,lv_uuid,segtype,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges,devices", &vg],
        "lv",
    );
    let pvs = report(
        &devs,
        &[
            "pvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pv_name,pv_uuid,pe_start",
        ],
        "pv",
    );
    let vgs = report(
        &devs,
        &[
            "vgs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_name,vg_uuid,vg_extent_size",
            &vg,
        ],
        "vg",
    );
    drop(loops);
    let extent = num(&vgs[0]["vg_extent_size"]);
    let part_at = BTreeMap::from([(a.clone(), P2.0 * 512), (b.clone(), P3.0 * 512)]);
    let pv_at: BTreeMap<String, u64> = pvs
        .iter()
        .map(|p| {
            let dev = p["pv_name"].as_str().unwrap().to_owned();
            let at = part_at[&dev] + num(&p["pe_start"]);
            (dev, at)
        })
        .collect();
    let segs_of =
        |lv: &str| -> Vec<&Value> { segs.iter().filter(|s| s["lv_name"] == lv).collect() };
    let lin = lv_pieces(&segs_of("lin"), &pv_at, extent);
    let strp = lv_pieces(&segs_of("str"), &pv_at, extent);
    assert_eq!(
        segs_of("lin").len(),
        2,
        "lin spans both PVs in two segments"
    );
    assert_eq!(num(&segs_of("str")[0]["stripes"]), 2);

    // ext4 in the LVs: lin holds diff.rs's chain (flat0 then flat1), str a
    // tree with a file across many stripes.
    let expected = crate::diff::build(dir);
    let tree = dir.join("stree");
    make_tree(&tree, 12);
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-d",
            tree.to_str().unwrap(),
            "-L",
            "striped",
            "str.raw",
            "16M",
        ],
    );
    write_lv(dir, "disk0.raw", "flat0.raw", &lin);
    write_lv(dir, "disk0.raw", "str.raw", &strp);
    std::fs::copy(dir.join("disk0.raw"), dir.join("disk1.raw")).unwrap();
    write_lv(dir, "disk1.raw", "flat1.raw", &lin);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "disk0.raw",
            "lbase.qcow2",
        ],
    );
    thin_overlay(
        dir,
        "ltop.qcow2",
        "lbase.qcow2",
        "qcow2",
        &dir.join("disk1.raw"),
        "",
        false,
    );

    // The LV list equals lvs; the contents equal blkid on the LVs' bytes.
    let ours = layerscope(dir, &["volumes", "--json", "ltop.qcow2"])
        .ok()
        .json();
    assert_eq!(
        ours["problems"].as_array().unwrap().len(),
        0,
        "{:#}",
        ours["problems"]
    );
    let group = &ours["groups"][0];
    assert_eq!(group["name"], vg);
    assert_eq!(group["uuid"], vgs[0]["vg_uuid"]);
    assert_eq!(group["extent_size"], extent);
    let found: Vec<(&str, &str)> = group["pvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["uuid"].as_str().unwrap(), p["volume"].as_str().unwrap()))
        .collect();
    let want_pvs: Vec<(&str, &str)> = pvs
        .iter()
        .map(|p| {
            (
                p["pv_uuid"].as_str().unwrap(),
                if p["pv_name"] == a.as_str() {
                    "p2"
                } else {
                    "p3"
                },
            )
        })
        .collect();
    assert_eq!(found, want_pvs);
    for lv in ["lin", "gap", "str"] {
        let theirs = segs_of(lv);
        let v = ours["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == format!("{vg}/{lv}"))
            .unwrap();
        let l = &v["role"]["logical"]["lv"];
        assert_eq!(l["uuid"], theirs[0]["lv_uuid"]);
        assert_eq!(
            v["len"].as_u64().unwrap(),
            num(&theirs[0]["lv_size"]),
            "{lv}"
        );
        let our_segs = l["segments"].as_array().unwrap();
        assert_eq!(our_segs.len(), theirs.len());
        for (o, t) in our_segs.iter().zip(&theirs) {
            assert_eq!(o["start_extent"].as_u64().unwrap(), num(&t["seg_start_pe"]));
            assert_eq!(o["extent_count"].as_u64().unwrap(), num(&t["seg_size_pe"]));
            assert_eq!(o["stripe_count"].as_u64().unwrap(), num(&t["stripes"]));
            assert_eq!(
                t["segtype"],
                if num(&t["stripes"]) == 1 {
                    "linear"
                } else {
                    "striped"
                }
            );
            if num(&t["stripes"]) > 1 {
                assert_eq!(o["stripe_size"].as_u64().unwrap(), num(&t["stripe_size"]));
            }
        }
        // Its disk areas are exactly the pieces lvs's numbers give.
        let mut want: Vec<(u64, u64)> = match lv {
            "lin" => lin.iter().map(|p| (p.1, p.2)).collect(),
            "str" => segs_of("str")[0]["seg_pe_ranges"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(|r| {
                    let (dev, range) = r.rsplit_once(':').unwrap();
                    let (x, y) = range.split_once('-').unwrap();
                    let (x, y): (u64, u64) = (x.parse().unwrap(), y.parse().unwrap());
                    (pv_at[dev] + x * extent, (y - x + 1) * extent)
                })
                .collect(),
            _ => continue,
        };
        want.sort();
        let mut got: Vec<(u64, u64)> = v["areas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
            .collect();
        got.sort();
        assert_eq!(got, want, "{lv}");
    }
    for (lv, flat) in [("lin", "flat1.raw"), ("str", "str.raw")] {
        let probe: BTreeMap<String, String> =
            String::from_utf8_lossy(&sh(dir, &["blkid", "-p", "-o", "export", flat]).stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let v = ours["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == format!("{vg}/{lv}"))
            .unwrap();
        assert_eq!(
            v["content"]["type"].as_str(),
            probe.get("TYPE").map(String::as_str)
        );
        assert_eq!(
            v["content"]["uuid"].as_str(),
            probe.get("UUID").map(String::as_str)
        );
    }

    // Two LVs hold ext4: the default is ambiguous and says so.
    let run = layerscope(dir, &["ls", "ltop.qcow2"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!("{vg}/lin (ext4"))
            && run.stderr.contains(&format!("{vg}/str (ext4"))
            && run.stderr.contains("--volume"),
        "{}",
        run.stderr
    );
    // info through the LV equals dumpe2fs of the LV's bytes, as of each
    // layer.
    let lin_name = format!("{vg}/lin");
    crate::ext::info::check_info_with(
        dir,
        "ltop.qcow2",
        "flat1.raw",
        None,
        &["--volume", &lin_name],
    );
    crate::ext::info::check_info_with(
        dir,
        "ltop.qcow2",
        "flat0.raw",
        Some("0"),
        &["--volume", &lin_name],
    );
    crate::ext::info::check_info_with(
        dir,
        "ltop.qcow2",
        "str.raw",
        None,
        &["--volume", &format!("{vg}/str")],
    );
    // ls -R and cat through the LV equal debugfs on its bytes.
    let ours_ls = layerscope(dir, &["ls", "-R", "ltop.qcow2", "--volume", &lin_name])
        .ok()
        .text();
    let ours_flat = layerscope(dir, &["ls", "-R", "flat1.raw"]).ok().text();
    assert_eq!(ours_ls, ours_flat);
    for d in ["/", "/etc", "/data", "/docs"] {
        let theirs = String::from_utf8_lossy(
            &sh(dir, &["debugfs", "-R", &format!("ls {d}"), "flat1.raw"]).stdout,
        )
        .into_owned();
        let ours = layerscope(dir, &["ls", "ltop.qcow2", "--volume", &lin_name, d])
            .ok()
            .text();
        let names = |t: &str| -> Vec<String> {
            let mut n: Vec<String> = t
                .split_whitespace()
                .filter(|w| !w.starts_with('(') && w.parse::<u64>().is_err())
                .map(str::to_owned)
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&ours), names(&theirs), "ls {d}");
    }
    for (vol, flat, file) in [
        (lin_name.as_str(), "flat1.raw", "/data/big.bin"),
        (lin_name.as_str(), "flat1.raw", "/etc/hosts"),
        (&format!("{vg}/str"), "str.raw", "/d4/s1/f4.bin"),
    ] {
        let ours = layerscope(dir, &["cat", "ltop.qcow2", "--volume", vol, file])
            .ok()
            .stdout;
        let theirs = sh(dir, &["debugfs", "-R", &format!("cat {file}"), flat]).stdout;
        assert!(ours.len() > 10 && ours == theirs, "cat {file} from {vol}");
    }
    // diff and blame inside the LV equal the plain chain's.
    let plain = layerscope(
        dir,
        &["diff", "--json", "--from", "0", "--to", "1", "l2.qcow2"],
    )
    .ok()
    .json();
    let in_lv = layerscope(
        dir,
        &["diff", "--json", "--volume", &lin_name, "ltop.qcow2"],
    )
    .ok()
    .json();
    assert_eq!(in_lv["changes"], plain["changes"]);
    assert!(!expected.is_empty() && !plain["changes"].as_array().unwrap().is_empty());
    let full = layerscope(
        dir,
        &[
            "diff",
            "--json",
            "--full",
            "--volume",
            &lin_name,
            "ltop.qcow2",
        ],
    )
    .ok()
    .json();
    assert_eq!(full["changes"], plain["changes"]);
    let blame = layerscope(
        dir,
        &[
            "blame",
            "--json",
            "--volume",
            &lin_name,
            "ltop.qcow2",
            "/data/big.bin",
        ],
    )
    .ok()
    .json();
    let plain_blame = layerscope(dir, &["blame", "--json", "l1.qcow2", "/data/big.bin"])
        .ok()
        .json();
    assert_eq!(blame[0]["content_layer"], plain_blame[0]["content_layer"]);
    assert_eq!(blame[0]["layers"], plain_blame[0]["layers"]);

    // The TUI: the layer diff inside the LV lists the plain chain's
    // changes; `g b<N>` in the striped LV lands where lvs's extents put
    // the block (a block in the second stripe chunk, on the other PV) and
    // shows its bytes as in the LV's own image.
    let render = |volume: &str, keys: &str| {
        layerscope(
            dir,
            &[
                "render",
                "ltop.qcow2",
                "--volume",
                volume,
                "--size",
                "200x60",
                "--keys",
                keys,
            ],
        )
        .ok()
        .text()
    };
    let frame = render(&lin_name, "d");
    // The first screenful, in the CLI's order.
    let shown = crate::tui_volumes::pane(&frame, "Changes");
    for (row, c) in shown[1..].iter().zip(plain["changes"].as_array().unwrap()) {
        let path = c["path"].as_str().unwrap();
        assert!(row.contains(path), "{path} in {row}\n{frame}");
    }
    assert!(
        frame.contains(&format!(
            "{} change(s) on {lin_name}",
            plain["changes"].as_array().unwrap().len()
        )),
        "{frame}"
    );
    let dumpe2fs = sh(dir, &["dumpe2fs", "-h", "str.raw"]).stdout;
    let bs: u64 = String::from_utf8_lossy(&dumpe2fs)
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let chunk = strp[0].2;
    let block = chunk / bs + 1;
    let off = block * bs;
    let &(lv_at, disk_at, _) = strp
        .iter()
        .find(|&&(lv, _, len)| lv <= off && off < lv + len)
        .unwrap();
    let want_at = disk_at + off - lv_at;
    assert_ne!(want_at, strp[0].1 + off, "the block is on the other stripe");
    let frame = render(&format!("{vg}/str"), &format!("g b{block} Enter"));
    assert!(frame.contains(&format!("Hex @ {want_at:#x}")), "{frame}");
    let bytes = std::fs::read(dir.join("str.raw")).unwrap();
    let row: Vec<String> = bytes[off as usize..off as usize + 8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let line = frame
        .lines()
        .find(|l| l.contains(&format!("{want_at:08x} ")))
        .unwrap_or_else(|| panic!("no row {want_at:08x} in\n{frame}"));
    assert!(line.contains(&row.join(" ")), "{line} vs {row:?}");

    bad_metadata(dir, &vg);
}

/// The metadata edited into each bad case of issue 12.
fn bad_metadata(dir: &Path, vg: &str) {
    let pv_a = P2.0 * 512;
    let case = |name: &str, edit: &dyn Fn(&str) -> String| -> Value {
        let img = format!("{name}.raw");
        std::fs::copy(dir.join("disk1.raw"), dir.join(&img)).unwrap();
        edit_metadata(dir, &img, pv_a, edit);
        let run = layerscope(dir, &["volumes", "--json", &img]);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        run.json()
    };
    let problems = |v: &Value| v["problems"].to_string();
    let lv_state = |v: &Value, lv: &str| -> Value {
        v["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == format!("{vg}/{lv}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    // A stripe past its PV.
    let v = case("past", &|t| in_lv(t, "gap", "\"pv0\", 20", "\"pv0\", 40"));
    assert!(
        problems(&v).contains(&format!(
            "{vg}/gap segment1 stripe 0: extents 40..44 pass the end of PV pv0"
        )),
        "{}",
        problems(&v)
    );
    assert!(lv_state(&v, "gap")["unsupported"].is_string());
    assert!(
        lv_state(&v, "lin")["unsupported"].is_null(),
        "the others still open"
    );
    // A loop of LV references: lin's first segment over gap, gap over lin.
    let v = case("loop", &|t| {
        in_lv(
            &in_lv(t, "gap", "\"pv0\", 20", "\"lin\", 0"),
            "lin",
            "\"pv0\", 0",
            "\"gap\", 0",
        )
    });
    assert!(
        problems(&v).contains("a loop of LV references: lin -> gap -> lin"),
        "{}",
        problems(&v)
    );
    // An LV of 2^64 extents, and one whose bytes pass 2^64.
    let v = case("huge", &|t| {
        in_lv(
            t,
            "gap",
            "extent_count = 4",
            "extent_count = 18446744073709551616",
        )
    });
    assert!(
        lv_state(&v, "gap")["unsupported"]
            .as_str()
            .unwrap()
            .contains("gap/segment1: extent_count: 18446744073709551616 is not a whole number"),
        "{v:#}"
    );
    let v = case("huge2", &|t| {
        in_lv(
            t,
            "gap",
            "extent_count = 4",
            "extent_count = 18446744073709551612",
        )
    });
    assert!(problems(&v).contains("pass 2^64 bytes"), "{}", problems(&v));
    // Types that are not read, named as such.
    for kind in ["thin-pool", "thin", "raid1", "mirror", "cache"] {
        let v = case("kind", &|t| {
            in_lv(
                t,
                "gap",
                "type = \"striped\"",
                &format!("type = \"{kind}\""),
            )
        });
        assert_eq!(
            lv_state(&v, "gap")["unsupported"],
            format!("segment type \"{kind}\": not supported")
        );
    }
    // 10 MiB of text: a valid VG and a 10 MiB comment reads; 10 MiB of
    // nesting is refused with the line.
    let big = "#".repeat(10 << 20);
    let v = case("big", &|t| format!("{t}\n{big}\n"));
    assert!(
        lv_state(&v, "lin")["unsupported"].is_null(),
        "{}",
        problems(&v)
    );
    let v = case("deep", &|_| "a {\n".repeat(10 << 18));
    assert!(
        problems(&v).contains("nested deeper than 32"),
        "{}",
        problems(&v)
    );
    // A bad text CRC: that copy is skipped (PV b's copy is used).
    let img = "crc.raw";
    std::fs::copy(dir.join("disk1.raw"), dir.join(img)).unwrap();
    edit_metadata(dir, img, pv_a, &|t| t.to_owned());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(img))
        .unwrap();
    f.seek(SeekFrom::Start(pv_a + 4096 + 512 + 10)).unwrap();
    f.write_all(b"X").unwrap();
    drop(f);
    let v = layerscope(dir, &["volumes", "--json", img]).ok().json();
    assert!(
        problems(&v).contains("metadata text CRC"),
        "{}",
        problems(&v)
    );
    assert!(lv_state(&v, "lin")["unsupported"].is_null());
}
