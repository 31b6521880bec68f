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
        "Tab Tab Tab Tab Tab Tab Enter Down Down Down Down Down Enter Down Enter d Esc",
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
    let plain = demo(120, 40, "Tab Tab Tab Tab Tab Tab Enter Down Down Enter");
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
