//! The TUI on qcow2's extras (issue 17): the hit map coloured by a
//! persistent dirty bitmap (`--bitmap NAME`, `m` cycling through them),
//! equal to `nbdinfo --map=qemu:dirty-bitmap:NAME` through `qemu-nbd -B
//! NAME`; and `--snapshot ID|NAME` showing the disk as `qemu-img convert
//! -l snapshot.name=…` reads it.
use std::path::Path;

use serde_json::Value;

use crate::nbd::{serve, socket_ready};
use crate::tui_volumes::pane;
use crate::util::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io") && need("qemu-nbd") && need("nbdinfo")
}

/// nbdinfo's map of bitmap `name` of `image`: (offset, length, dirty).
fn nbdinfo_dirty(cwd: &Path, image: &str, name: &str) -> Vec<(u64, u64, bool)> {
    let sock = cwd.join(format!("{name}.sock"));
    let _server = serve(
        cwd,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-B",
            name,
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            image,
        ],
        &socket_ready(sock.clone()),
    );
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let map = format!("--map=qemu:dirty-bitmap:{name}");
    let out = sh(cwd, &["nbdinfo", "--json", &map, &uri]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["type"].as_u64().unwrap() & 1 == 1,
            )
        })
        .collect()
}

/// The hit map's grid (rows of cells) and its legend, from a frame.
fn hit_map(frame: &str) -> (Vec<Vec<char>>, String) {
    let rows = pane(frame, "Hit map");
    let width = rows.iter().map(|r| r.chars().count()).max().unwrap();
    let grid: Vec<Vec<char>> = rows
        .iter()
        .map(|r| r.chars().collect::<Vec<_>>())
        .take_while(|r| r.len() == width && r.iter().all(|c| matches!(c, '█' | '·')))
        .collect();
    let legend = rows[grid.len()..].join(" ");
    (grid, legend)
}

/// A 16 MiB disk with two bitmaps of different granularity, written
/// after both were added, and a third added after the first writes.
fn build(cwd: &Path) {
    sh(
        cwd,
        &["qemu-img", "create", "-q", "-f", "qcow2", "d.qcow2", "16M"],
    );
    sh(cwd, &["qemu-img", "bitmap", "--add", "d.qcow2", "fine"]);
    sh(
        cwd,
        &[
            "qemu-img", "bitmap", "--add", "-g", "1M", "d.qcow2", "coarse",
        ],
    );
    qemu_io(cwd, "d.qcow2", &["write -P 1 0 64k", "write -P 2 5M 100k"]);
    sh(cwd, &["qemu-img", "bitmap", "--add", "d.qcow2", "late"]);
    qemu_io(cwd, "d.qcow2", &["write -P 3 12M 4k"]);
}

#[test]
fn hit_map_by_bitmap_equals_nbdinfo_dirty_bitmap() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    build(dir);
    let size = 16u64 << 20;
    for name in ["fine", "coarse", "late"] {
        let oracle = nbdinfo_dirty(dir, "d.qcow2", name);
        let frame = layerscope(
            dir,
            &["render", "d.qcow2", "--size", "120x40", "--bitmap", name],
        )
        .ok()
        .text();
        assert!(
            frame.contains(&format!("Hit map: bitmap {name} (m)")),
            "{frame}"
        );
        let (grid, legend) = hit_map(&frame);
        let cells: Vec<char> = grid.concat();
        assert!(cells.len() > 100, "{frame}");
        // A cell is dirty when any byte in it is.
        let cell = size.div_ceil(cells.len() as u64);
        let mut want = vec!['·'; cells.len()];
        for &(off, len, dirty) in &oracle {
            if dirty {
                let last = ((off + len - 1) / cell) as usize;
                want[(off / cell) as usize..=last].fill('█');
            }
        }
        assert_eq!(cells, want, "{name}:\n{frame}");
        assert!(cells.contains(&'█') && cells.contains(&'·'), "{name}");
        // The legend: the dirty and the clean bytes.
        let dirty: u64 = oracle.iter().filter(|e| e.2).map(|e| e.1).sum();
        let human = layerscope::units::human;
        assert!(
            legend.contains(&format!("dirty:{}", human(dirty)))
                && legend.contains(&format!("clean:{}", human(size - dirty))),
            "{name}: {legend}"
        );
    }
    // `m` cycles owner, served, then each bitmap in the file's order, and
    // back.
    for (keys, title) in [
        ("m", "served so far"),
        ("m m", "bitmap fine"),
        ("m m m", "bitmap coarse"),
        ("m m m m", "bitmap late"),
        ("m m m m m", "owner"),
    ] {
        let frame = layerscope(dir, &["render", "d.qcow2", "--keys", keys])
            .ok()
            .text();
        assert!(
            frame.contains(&format!("Hit map: {title} (m)")),
            "{keys}:\n{frame}"
        );
    }
    // A bitmap not there: refused, naming those there are.
    let err = fails(layerscope(dir, &["render", "d.qcow2", "--bitmap", "nope"]));
    assert!(
        err.contains("no bitmap \"nope\" (bitmaps here: fine, coarse, late)"),
        "{err}"
    );
    sh(
        dir,
        &["qemu-img", "convert", "-O", "raw", "d.qcow2", "d.raw"],
    );
    let err = fails(layerscope(dir, &["render", "d.raw", "--bitmap", "fine"]));
    assert!(
        err.contains("persistent bitmaps are a qcow2 feature"),
        "{err}"
    );
}

/// A run that failed: its message.
fn fails(run: Run) -> String {
    assert_eq!(run.code, 1, "{}", run.text());
    run.stderr
}

/// The 16 bytes the hex pane shows at `offset` (a row it starts with).
fn hex_row(frame: &str, offset: u64) -> Vec<u8> {
    let head = format!("{offset:08x} ");
    let line = frame
        .lines()
        .find_map(|l| l.split_once(&head).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no row {head} in\n{frame}"));
    line.split_whitespace()
        .take(16)
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn render_with_snapshot_shows_the_disk_as_qemu_img_convert_l() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", "s.qcow2", "8M"],
    );
    qemu_io(dir, "s.qcow2", &["write -P 17 1M 64k"]);
    sh(dir, &["qemu-img", "snapshot", "-c", "before", "s.qcow2"]);
    qemu_io(dir, "s.qcow2", &["write -P 34 1M 4k", "write -P 51 3M 64k"]);
    let at = |snapshot: Option<&str>, offset: u64| {
        let keys = format!("g {offset:#x} Enter");
        let mut args = vec!["render", "s.qcow2", "--size", "120x40", "--keys", &keys];
        if let Some(s) = snapshot {
            args.extend(["--snapshot", s]);
        }
        layerscope(dir, &args).ok().text()
    };
    let then = qemu_raw(dir, "s.qcow2", &["-l", "snapshot.name=before"]);
    let now = qemu_raw(dir, "s.qcow2", &[]);
    for offset in [1u64 << 20, 3 << 20] {
        let o = offset as usize;
        assert_ne!(then[o..o + 16], now[o..o + 16], "the test writes there");
        // By name and by ID (1: the first snapshot), as qemu-img takes it.
        for s in ["before", "1"] {
            let frame = at(Some(s), offset);
            assert_eq!(hex_row(&frame, offset), then[o..o + 16], "{s}:\n{frame}");
            assert!(frame.contains("at snapshot 1 before"), "{frame}");
        }
        assert_eq!(hex_row(&at(None, offset), offset), now[o..o + 16]);
    }
    let err = fails(layerscope(
        dir,
        &["render", "s.qcow2", "--snapshot", "nope"],
    ));
    assert!(err.contains("nope"), "{err}");
}
