//! The layer diff in the UI (`d`): the list of changes, the tree's marks,
//! and a file side by side as of both layers, on the demo chain; checked
//! against `layerscope diff` (itself checked against debugfs in `diff`)
//! and debugfs `cat` of the flattened layers.
use std::time::Duration;

use layerscope::ui::app::{Reply, Request};
use layerscope::ui::render_frame;

use crate::util::*;

fn demo(w: u16, h: u16, keys: &str) -> String {
    render_frame(layerscope::demo::open().unwrap(), w, h, keys, false)
}

/// The demo chain's files, to run the CLI and debugfs on.
fn demo_files(dir: &std::path::Path) {
    for name in ["base.qcow2", "update.qcow2", "top.qcow2"] {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/demo")
            .join(name);
        std::fs::copy(src, dir.join(name)).unwrap();
    }
}

#[test]
fn changes_list_equals_the_cli_diff() {
    let tmp = tempfile::tempdir().unwrap();
    demo_files(tmp.path());
    let cli = layerscope(tmp.path(), &["diff", "--json", "top.qcow2"])
        .ok()
        .json();
    let frame = demo(120, 40, "d");
    for c in cli["changes"].as_array().unwrap() {
        let letter = match c["change"].as_str().unwrap() {
            "added" => "A",
            "deleted" => "D",
            "modified" => "M",
            _ => "R",
        };
        let path = c["path"].as_str().unwrap();
        let line = match c["from"].as_str() {
            Some(from) => format!("{letter} {from} -> {path}"),
            None => format!("{letter} {path}"),
        };
        // The pane is narrow: compare what fits.
        let shown: String = line.chars().take(38).collect();
        assert!(
            frame.contains(&format!("│{shown}")),
            "{shown:?} in\n{frame}"
        );
    }
    assert!(frame.contains(&format!(
        "{} change(s)",
        cli["changes"].as_array().unwrap().len()
    )));
    insta::assert_snapshot!("changes_120x40", frame);
    insta::assert_snapshot!("changes_80x24", demo(80, 24, "d"));
}

#[test]
fn tree_rows_carry_the_change_letter() {
    // The list, back to the tree, open / and /etc: hostname changed in
    // the top layer, hosts did not.
    let frame = demo(120, 40, "d Esc Enter Down Down Enter");
    let row = |name: &str| {
        frame
            .lines()
            .find(|l| l.contains(&format!("      {name} ")))
            .unwrap_or_else(|| panic!("{name} in\n{frame}"))
            .to_owned()
    };
    assert!(row("hostname").contains(" M2 "), "{}", row("hostname"));
    assert!(!row("hosts").contains('M'), "{}", row("hosts"));
    // A name the layer removed (logo.bin moved away, per the CLI diff)
    // stays in its directory, dimmed and marked D, whether the directory
    // was opened before or after the diff.
    let tmp = tempfile::tempdir().unwrap();
    demo_files(tmp.path());
    let cli = layerscope(tmp.path(), &["diff", "--json", "top.qcow2"])
        .ok()
        .json();
    let gone = cli["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c["from"].as_str())
        .unwrap()
        .to_owned();
    let name = gone.rsplit('/').next().unwrap();
    assert_eq!(gone, format!("/srv/www/{name}"));
    for keys in [
        "d Esc Enter Down Down Down Down Down Enter Down Enter",
        "Tab Tab Tab Tab Tab Tab Tab Enter Down Down Down Down Down Enter Down Enter d Esc",
    ] {
        let frame = demo(120, 40, keys);
        let row = frame
            .lines()
            .find(|l| l.contains(&format!("        {name} ")))
            .unwrap_or_else(|| panic!("{name} in\n{frame}"));
        let tree_part = row.split("││").next().unwrap();
        assert!(tree_part.trim_end().ends_with(" D"), "{row}");
    }
    // Without `d`, no letters.
    let plain = demo(120, 40, "Tab Tab Tab Tab Tab Tab Tab Enter Down Down Enter");
    assert!(!plain.contains(" M2 "), "{plain}");
}

#[test]
fn a_changed_file_side_by_side() {
    if !(need("qemu-img") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    demo_files(tmp.path());
    // debugfs reads each flattened layer.
    let mut bodies = Vec::new();
    for (layer, image) in [(1, "update.qcow2"), (2, "top.qcow2")] {
        let flat = format!("flat{layer}.raw");
        sh(
            tmp.path(),
            &["qemu-img", "convert", "-O", "raw", image, &flat],
        );
        bodies.push(sh(tmp.path(), &["debugfs", "-R", "cat /etc/hostname", &flat]).stdout);
    }
    let frame = demo(120, 40, "d Enter");
    assert!(
        frame.contains(&format!(
            "/etc/hostname: layer 1 ({} B) | layer 2 ({} B)",
            bodies[0].len(),
            bodies[1].len()
        )),
        "{frame}"
    );
    // The first row: 8 bytes of each side in hex.
    let hex = |b: &[u8]| {
        b.iter()
            .take(8)
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let first = frame.lines().find(|l| l.contains("│00000000│")).unwrap();
    assert!(first.contains(&hex(&bodies[0])), "{first}");
    assert!(first.contains(&hex(&bodies[1])), "{first}");
    insta::assert_snapshot!("changes_compare_120x40", frame);
    // Esc closes the comparison, Esc again the list.
    let back = demo(120, 40, "d Enter Esc Esc");
    assert!(
        back.contains("Tree (as of layer 2)") && back.contains("Hex @ 0x0"),
        "{back}"
    );
}

#[test]
fn the_base_layer_has_no_changes() {
    let frame = demo(120, 40, "BackTab BackTab Down Down Enter d");
    assert!(frame.contains("layer 0 is the base"), "{frame}");
}

/// The live UI computes the diff on its own thread: progress, then the
/// same changes the headless frame shows, while the worker keeps serving.
#[test]
fn the_diff_runs_beside_the_worker() {
    let tmp = tempfile::tempdir().unwrap();
    demo_files(tmp.path());
    let cli = layerscope(tmp.path(), &["diff", "--json", "top.qcow2"])
        .ok()
        .json();
    let expect: Vec<&str> = cli["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    let chain = layerscope::demo::open().unwrap();
    let worker = layerscope::ui::worker::Worker::new(chain);
    let (tx, rx) = layerscope::ui::worker::spawn(worker);
    tx.send(Request::Diff { to: 2 }).unwrap();
    tx.send(Request::Nbd).unwrap();
    let mut progress = 0;
    let mut other = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)).expect("a reply") {
            Reply::DiffProgress { .. } => progress += 1,
            Reply::Diff { from, to, result } => {
                assert_eq!((from, to), (1, 2));
                let (rows, _) = result.unwrap();
                let paths: Vec<&str> = rows.iter().map(|c| c.path.as_str()).collect();
                assert_eq!(paths, expect);
                break;
            }
            _ => other = true,
        }
    }
    assert!(progress >= 1);
    // The NBD request was answered too (the demo is local: an error).
    while !other {
        match rx.recv_timeout(Duration::from_secs(10)).expect("a reply") {
            Reply::DiffProgress { .. } => {}
            _ => other = true,
        }
    }
}

/// The `(offset, new side's bytes)` of each row of a side-by-side frame.
/// A side is the row's bytes in hex ("xx " each) then their glyphs, so
/// the bytes are read at fixed places (glyphs such as "12" look like hex).
fn compare_rows(frame: &str) -> Vec<(u64, Vec<u8>)> {
    let mut rows = Vec::new();
    for line in frame.lines() {
        // "│OFFSET│old hex old chars│new hex new chars│"
        let parts: Vec<&str> = line.split('│').collect();
        let Some(at) = parts
            .iter()
            .position(|p| p.len() == 8 && p.chars().all(|c| c.is_ascii_hexdigit()))
        else {
            continue;
        };
        let offset = u64::from_str_radix(parts[at], 16).unwrap();
        rows.push((offset, parts[at + 2].chars().collect::<Vec<char>>()));
    }
    let per = match rows.as_slice() {
        [a, b, ..] => usize::try_from(b.0 - a.0).unwrap(),
        _ => 16,
    };
    rows.into_iter()
        .map(|(offset, side)| {
            let bytes = (0..per)
                .map_while(|i| {
                    let hex: String = side.get(3 * i..3 * i + 2)?.iter().collect();
                    u8::from_str_radix(&hex, 16).ok()
                })
                .collect();
            (offset, bytes)
        })
        .collect()
}

#[test]
fn the_side_by_side_view_scrolls_and_jumps_between_differences() {
    if !(need("qemu-img") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    demo_files(tmp.path());
    let flat = |layer: usize, image: &str| {
        let name = format!("flat{layer}.raw");
        sh(
            tmp.path(),
            &["qemu-img", "convert", "-O", "raw", image, &name],
        );
        name
    };
    let (base, update) = (flat(0, "base.qcow2"), flat(1, "update.qcow2"));
    let cat = |image: &str, path: &str| {
        sh(
            tmp.path(),
            &["debugfs", "-R", &format!("cat {path}"), image],
        )
        .stdout
    };
    // Layer 1 added /srv/www/app.js (118 KiB): the list's fourth row.
    let app_js = cat(&update, "/srv/www/app.js");
    let open = "1 Down Enter d Down Down Down Enter";
    let first = demo(120, 40, open);
    assert!(
        first.contains("/srv/www/app.js: layer 0 (absent)"),
        "{first}"
    );
    let rows = compare_rows(&first);
    let per = rows[1].0 - rows[0].0;
    let page = per * rows.len() as u64;
    for (keys, top) in [
        ("Down", per),
        ("PageDown", page),
        ("PageDown Down Down", page + 2 * per),
        ("PageDown PageDown Up", 2 * page - per),
        ("PageDown Home", 0),
    ] {
        let frame = demo(120, 40, &format!("{open} {keys}"));
        let rows = compare_rows(&frame);
        assert_eq!(rows[0].0, top, "{keys}:\n{frame}");
        // Both sides in step: the new side holds the file's bytes there
        // (debugfs cat), the old side nothing.
        for (at, bytes) in &rows {
            let at = *at as usize;
            assert_eq!(bytes[..], app_js[at..at + bytes.len()], "{keys} at {at:#x}");
        }
    }
    // End: the last row holds the file's last bytes.
    let frame = demo(120, 40, &format!("{open} End"));
    let (at, bytes) = compare_rows(&frame).pop().unwrap();
    assert_eq!(at as usize + bytes.len(), app_js.len(), "{frame}");
    // /etc/motd, modified: n and N go from difference to difference, in
    // the bytes debugfs gives as of each layer.
    let (old, new) = (cat(&base, "/etc/motd"), cat(&update, "/etc/motd"));
    let differs = |at: usize, n: usize| (at..at + n).any(|i| old.get(i) != new.get(i));
    let motd = "1 Down Enter d Down Enter";
    let frame = demo(120, 40, motd);
    assert!(frame.contains("/etc/motd: layer 0"), "{frame}");
    let rows = compare_rows(&frame);
    let first_diff = (0..new.len()).find(|&i| old.get(i) != new.get(i)).unwrap() as u64;
    assert_eq!(rows[0].0, first_diff / per * per, "{frame}");
    let frame = demo(120, 40, &format!("{motd} n"));
    let top = compare_rows(&frame)[0].0 as usize;
    assert!(
        top > first_diff as usize && differs(top, per as usize),
        "{frame}"
    );
    let back = demo(120, 40, &format!("{motd} n N"));
    assert_eq!(compare_rows(&back)[0].0, first_diff / per * per, "{back}");
    insta::assert_snapshot!(
        "compare_scrolled_120x40",
        demo(120, 40, &format!("{open} PageDown Down Down"))
    );
    // At 80x24 Enter switches to the side-by-side view, it scrolls, and
    // Esc goes back to the list.
    let frame = demo(80, 24, "1 Down Enter d Down Down Down Enter PageDown");
    assert!(frame.contains("/srv/www/app.js: layer 0"), "{frame}");
    insta::assert_snapshot!("compare_scrolled_80x24", frame);
    let frame = demo(80, 24, "1 Down Enter d Down Down Down Enter PageDown Esc");
    assert!(frame.contains("Changes: layer 1 over 0"), "{frame}");
}
