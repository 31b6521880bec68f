//! The TUI's layouts and states as insta snapshots (each read before it
//! was accepted): the demo chain at 80x24, 120x40, 160x45 and 200x60,
//! without colour (NO_COLOR: layers by digit) and with the 16 ANSI
//! colours; a message, an error, a request pending and one failed; the
//! side-by-side view scrolled.
use layerscope::ui::app::{Action, App, Reply, Request};
use layerscope::ui::{draw_text, render_frame};

use crate::util::{debugfs_w, layerscope, need, sh};

fn demo(w: u16, h: u16, keys: &str, ansi: bool) -> String {
    render_frame(layerscope::demo::open().unwrap(), w, h, keys, ansi)
}

#[test]
fn snapshot_every_pane_at_160x45_and_200x60() {
    for (w, h) in [(160, 45), (200, 60)] {
        let frame = demo(w, h, "", false);
        for pane in [
            "┌Chain",
            "┌Status",
            "┌Superblock",
            "┌Tree",
            "┌Groups",
            "┌Hex",
            "┌Hit map",
        ] {
            assert!(frame.contains(pane), "{pane} at {w}x{h}:\n{frame}");
        }
        // Data in every pane, none waiting.
        assert!(
            !frame.contains("reading") && !frame.contains("computing"),
            "{frame}"
        );
        insta::assert_snapshot!(format!("all_panes_{w}x{h}"), frame);
    }
    // The tree open with the file's layers, groups and superblock: every
    // pane busy at once.
    let frame = demo(200, 60, "2 Enter Down Down Enter 6 5 Down Down", false);
    assert!(frame.contains("▾ etc"), "{frame}");
    insta::assert_snapshot!("all_panes_busy_200x60", frame);
}

#[test]
fn snapshot_sixteen_colours_at_each_size() {
    for (w, h) in [(80, 24), (120, 40), (160, 45), (200, 60)] {
        let frame = demo(w, h, "", true);
        // Colours as SGR codes of the 16-colour palette only.
        assert!(frame.contains("\x1b[0;3"), "{frame}");
        assert!(!frame.contains("38;5;") && !frame.contains("38;2;"));
        insta::assert_snapshot!(format!("sixteen_colours_{w}x{h}"), frame);
    }
}

#[test]
fn without_colour_each_layer_has_its_digit_in_the_hit_map() {
    let frame = demo(120, 40, "", false);
    let top = frame.lines().position(|l| l.contains("┌Hit map")).unwrap();
    let grid: String = frame.lines().skip(top + 1).take(4).collect();
    for digit in ['0', '1', '2'] {
        assert!(grid.contains(digit), "layer {digit} in\n{grid}");
    }
    // With colours, blocks in each layer's colour instead.
    let ansi = demo(120, 40, "", true);
    assert!(ansi.contains('█'));
}

#[test]
fn snapshot_message_and_error_in_the_bar() {
    // A message stays (until the next key).
    let frame = demo(80, 24, "BackTab BackTab Down Enter", false);
    assert!(frame.lines().last().unwrap().contains("disk as of layer 1"));
    insta::assert_snapshot!("message_80x24", frame);
    // An error: its own mark (and, with colours, style).
    let frame = demo(80, 24, "g zz Enter", false);
    let bar = frame.lines().last().unwrap();
    assert!(
        bar.starts_with(" ✗ ") && bar.contains("not a byte count"),
        "{bar}"
    );
    insta::assert_snapshot!("error_80x24", frame);
    let ansi = demo(80, 24, "g zz Enter", true);
    let bar = ansi.lines().last().unwrap();
    assert!(bar.contains("\x1b[0;31;1;7m ✗"), "{bar:?}");
}

#[test]
fn snapshot_pending_and_failed_requests() {
    let chain = layerscope::demo::open().unwrap();
    let mut app = App::for_chain(&chain);
    // Asked for, not answered: the panes say they wait.
    let asked = app.apply(Action::Resize(120, 40));
    let frame = draw_text(&app, false);
    assert!(
        frame.contains("reading 0x0…") && frame.contains("computing…"),
        "{frame}"
    );
    insta::assert_snapshot!("pending_120x40", frame);
    // The hex read fails: the pane says so, and the bar.
    let hex = asked
        .into_iter()
        .find(|r| matches!(r, Request::Hex { .. }))
        .unwrap();
    let _ = app.receive(Reply::Failed {
        request: Box::new(hex),
        error: "top.qcow2: reading at 0x0: Input/output error".into(),
    });
    let frame = draw_text(&app, false);
    assert!(
        frame.contains("cannot read 0x0: top.qcow2: reading at 0x0: Input/output error"),
        "{frame}"
    );
    assert!(frame.lines().last().unwrap().starts_with(" ✗ "), "{frame}");
    insta::assert_snapshot!("failed_120x40", frame);
    // Moving on: the new offset is pending, the old failure not shown.
    let _ = app.apply(Action::Down);
    let frame = draw_text(&app, false);
    assert!(
        frame.contains("reading 0x10…") && !frame.contains("cannot read"),
        "{frame}"
    );
}

/// The Superblock pane's text as the fields scroll past (keys `5`, then
/// PageDown `pages` times), every frame's pane joined as words.
fn superblock_words(dir: &std::path::Path, image: &str, size: &str, pages: usize) -> String {
    let mut words = String::new();
    for page in 0..=pages {
        let keys = std::iter::once("5")
            .chain(std::iter::repeat_n("PageDown", page))
            .collect::<Vec<_>>()
            .join(" ");
        let frame = layerscope(dir, &["render", image, "--size", size, "--keys", &keys])
            .ok()
            .text();
        let rows = crate::tui_volumes::pane(&frame, "Superblock");
        // Nothing in the pane is cut (a cut would end in `…`).
        assert!(!rows.iter().any(|r| r.contains('…')), "{size}:\n{frame}");
        words.push_str(&rows.join(" "));
        words.push(' ');
    }
    words.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The words after `field`'s name in the pane text: its raw value, `=`,
/// then what it means.
fn after<'a>(words: &'a str, field: &str) -> Vec<&'a str> {
    let at = words
        .find(&format!(" {field} "))
        .unwrap_or_else(|| panic!("no {field} in {words}"));
    words[at..].split(' ').skip(2).collect()
}

#[test]
fn superblock_at_160x45_and_200x60_shows_what_dumpe2fs_decodes() {
    if !need("mke2fs") || !need("dumpe2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-O",
            "quota,project",
            "e.raw",
            "32M",
        ],
    );
    // Four different dates, none "n/a".
    debugfs_w(
        dir,
        "e.raw",
        "ssv mkfs_time 20230314150926\nssv mtime 20240229123456\nssv lastcheck 20251231235959\n",
    );
    let out = std::process::Command::new("dumpe2fs")
        .args(["-h", "e.raw"])
        .env("TZ", "UTC")
        .current_dir(dir)
        .output()
        .unwrap();
    let oracle = String::from_utf8_lossy(&out.stdout).into_owned();
    let said = |label: &str| -> String {
        let line = oracle
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label}:")))
            .unwrap_or_else(|| panic!("no {label} in {oracle}"));
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let features: std::collections::BTreeSet<String> = said("Filesystem features")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert!(features.contains("metadata_csum") && features.contains("project"));
    for size in ["160x45", "200x60"] {
        let words = superblock_words(dir, "e.raw", size, 12);
        // Dates as dumpe2fs prints them (TZ=UTC), after the raw number.
        for (field, label) in [
            ("s_mkfs_time", "Filesystem created"),
            ("s_mtime", "Last mount time"),
            ("s_wtime", "Last write time"),
            ("s_lastcheck", "Last checked"),
        ] {
            let date = said(label);
            assert_ne!(date, "n/a");
            let w = after(&words, field);
            assert_eq!(w[1], "=", "{size} {field}: {w:?}");
            assert_eq!(w[2..7].join(" "), date, "{size} {field}");
        }
        // Every feature name dumpe2fs lists, and no other.
        let mut shown = std::collections::BTreeSet::new();
        for field in [
            "s_feature_compat",
            "s_feature_incompat",
            "s_feature_ro_compat",
        ] {
            let w = after(&words, field);
            assert_eq!(w[1], "=", "{size} {field}: {w:?}");
            shown.extend(
                w[2..]
                    .iter()
                    .take_while(|x| !x.starts_with("0x") && !x.starts_with("s_"))
                    .map(|x| (*x).to_owned()),
            );
        }
        assert_eq!(shown, features, "{size}");
        // The magic in hex, and the checksum with its state.
        assert_eq!(
            after(&words, "s_magic")[0],
            said("Filesystem magic number").to_lowercase()
        );
        let hex = |x: &str| u32::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
        let w = after(&words, "s_checksum");
        assert_eq!(hex(w[0]), hex(&said("Checksum")), "{size}");
        assert_eq!(w[1], "ok", "{size}");
        // The UUID whole.
        let uuid = said("Filesystem UUID");
        assert!(words.contains(&format!("s_uuid {uuid}")), "{size}: {uuid}");
    }
}
