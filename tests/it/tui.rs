//! The terminal UI, headless: frames of the demo chain as insta snapshots
//! (80x24 and 120x40, with key scripts), hexyl's colours against ours, and
//! hostile names shown escaped. `tmux` drives the real binary in `e2e`.
use layerscope::ui::hex::ByteClass;
use layerscope::ui::render_frame;

use crate::util::*;

fn demo(w: u16, h: u16, keys: &str) -> String {
    render_frame(layerscope::demo::open().unwrap(), w, h, keys, false)
}

#[test]
fn snapshot_demo_wide_all_panes() {
    insta::assert_snapshot!("demo_120x40", demo(120, 40, ""));
}

#[test]
fn snapshot_demo_narrow_hex_first() {
    insta::assert_snapshot!("demo_80x24", demo(80, 24, ""));
}

#[test]
fn snapshot_superblock_bytes_after_goto() {
    let frame = demo(80, 24, "g 0x400 Enter");
    // The ext4 magic 0xEF53 (little-endian) at 0x438, the label at 0x478.
    assert!(
        frame.contains("00000430 00 f1 53 65 00 00 ff ff  53 ef"),
        "{frame}"
    );
    insta::assert_snapshot!("goto_superblock_80x24", frame);
}

#[test]
fn snapshot_chain_pane_and_layer_choice() {
    // Chain pane, select the base (two steps down), see the disk as of it.
    let frame = demo(80, 24, "BackTab BackTab Down Down Enter");
    assert!(frame.contains("▶█0 base.qcow2"), "{frame}");
    assert!(frame.contains("disk as of layer 0"), "{frame}");
    insta::assert_snapshot!("chain_as_of_base_80x24", frame);
}

#[test]
fn snapshot_runtime_hit_map_and_help() {
    let frame = demo(120, 40, "g 0x400 Enter PageDown m");
    assert!(frame.contains("Hit map: served so far"), "{frame}");
    insta::assert_snapshot!("runtime_hit_map_120x40", frame);
    insta::assert_snapshot!("help_80x24", demo(80, 24, "?"));
}

#[test]
fn snapshot_tree_and_file_bytes() {
    // Tree pane: open /, open /etc, go to hosts, Enter shows its bytes.
    let frame = demo(80, 24, "BackTab Enter Down Down Enter Down Down Enter");
    assert!(frame.contains("127.0.0.1 localh"), "{frame}");
    // /srv/www/app.js was added by the update layer; the top rewrote the
    // cluster holding its tail: its blocks come from both.
    let app_js = demo(
        120,
        40,
        "BackTab Enter Down Down Down Down Down Enter Down Enter Down Enter",
    );
    assert!(
        app_js.contains("its blocks come from layer 2, layer 1"),
        "{app_js}"
    );
    insta::assert_snapshot!("file_bytes_from_tree_80x24", frame);
    let frame = demo(
        120,
        40,
        "BackTab Enter Down Down Enter Down Down Down Down Down",
    );
    assert!(
        frame.contains("▾ etc") && frame.contains("hostname"),
        "{frame}"
    );
    insta::assert_snapshot!("tree_expanded_120x40", frame);
}

#[test]
fn tree_as_of_the_base_layer_lacks_the_overlays_files() {
    let top = demo(120, 40, "BackTab Enter Down Down Down Down Down Enter");
    assert!(top.contains("▾ srv") && top.contains("www"), "{top}");
    // Chain pane: choose the base, then the tree of the base.
    let base = demo(
        120,
        40,
        "BackTab BackTab Down Down Enter Tab Enter Down Down Down Down Down Enter",
    );
    assert!(base.contains("Tree (as of layer 0)"), "{base}");
    assert!(
        base.contains("▾ srv") && !base.contains("www"),
        "the base has no /srv/www:\n{base}"
    );
}

#[test]
fn snapshot_superblock_pane_highlights_fields() {
    let frame = demo(
        120,
        40,
        "Tab Tab Enter Down Down Down Down Down Down Down Down Down Down Down Down Down Down Down",
    );
    assert!(frame.contains("0x0438 s_magic"), "{frame}");
    insta::assert_snapshot!("superblock_120x40", frame);
}

#[test]
fn prompt_errors_are_shown_not_fatal() {
    let frame = demo(80, 24, "g 0x7fffffffff Enter");
    assert!(frame.contains("past the end of the disk"), "{frame}");
    let frame = demo(80, 24, "g zz Enter");
    assert!(frame.contains("not a byte count"), "{frame}");
}

#[test]
fn hexyl_and_the_hex_view_colour_every_byte_the_same() {
    let d = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..=255u8).collect();
    std::fs::write(d.path().join("all.raw"), &bytes).unwrap();
    let run = layerscope(
        d.path(),
        // --length: a raw disk is whole sectors, the rest reads as zeros.
        &[
            "read", "-f", "raw", "all.raw", "--hex", "--color", "always", "--length", "256",
        ],
    )
    .ok();
    let text = run.text();
    let mut seen = Vec::new();
    for line in text.lines().filter(|l| l.contains('┊')) {
        // The hex columns sit between the offset's "│" and the glyphs' "│".
        let parts: Vec<&str> = line.split('│').collect();
        let hex = parts[2];
        let mut color = 39u8;
        let mut chars = hex.chars().peekable();
        let mut digits = String::new();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                let code: String = chars.by_ref().skip(1).take_while(|c| *c != 'm').collect();
                color = code.parse().unwrap_or(39);
            } else if c.is_ascii_hexdigit() {
                digits.push(c);
                if digits.len() == 2 {
                    seen.push((u8::from_str_radix(&digits, 16).unwrap(), color));
                    digits.clear();
                }
            }
        }
    }
    assert_eq!(seen.len(), 256, "parsed {} bytes from hexyl", seen.len());
    for (b, color) in seen {
        assert_eq!(
            color,
            ByteClass::of(b).ansi_fg(),
            "byte {b:#04x}: hexyl {color}, layerscope {}",
            ByteClass::of(b).ansi_fg()
        );
    }
}

#[test]
fn hostile_file_names_are_escaped_in_frames() {
    if !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let evil = "evil\x1b[2J\x07\nname.qcow2";
    sh(
        dir,
        &["qemu-img", "create", "-q", "-f", "qcow2", evil, "1M"],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            evil,
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    let frame = layerscope(dir, &["render", "top.qcow2", "--size", "120x40"])
        .ok()
        .text();
    assert!(
        !frame.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in the frame"
    );
    assert!(frame.contains("evil\\x1b[2J\\x07\\nname.qcow2"), "{frame}");
    let chain = layerscope(dir, &["chain", "top.qcow2"]).ok().text();
    assert!(
        !chain.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in chain"
    );
    let map = layerscope(dir, &["map", "top.qcow2"]).ok().text();
    assert!(
        !map.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in map"
    );
}
