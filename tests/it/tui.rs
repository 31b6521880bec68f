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
    // Its row marks both layers; the hit map marks its cells.
    assert!(app_js.contains(" 21   118.0 KiB"), "{app_js}");
    assert!(app_js.contains("▓file"), "{app_js}");
    insta::assert_snapshot!("file_layers_and_cells_120x40", app_js);
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

/// The hex bytes of an `--ansi` frame and their marks: (offset, byte,
/// underlined, reversed), from the hex pane's rows.
fn marked_bytes(frame: &str) -> Vec<(u64, u8, bool, bool)> {
    let mut out = Vec::new();
    for line in frame.lines() {
        // The characters with the underline / reverse state of each.
        let (mut cells, mut ul, mut rev) = (Vec::new(), false, false);
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c != '\x1b' {
                cells.push((c, ul, rev));
                continue;
            }
            let code: String = chars.by_ref().skip(1).take_while(|c| *c != 'm').collect();
            for n in code.split(';') {
                match n {
                    "0" => (ul, rev) = (false, false),
                    "4" => ul = true,
                    "7" => rev = true,
                    _ => {}
                }
            }
        }
        let plain: Vec<char> = cells.iter().map(|c| c.0).collect();
        // A hex row: "│", 8 offset digits, a space, then the bytes.
        let Some(start) = (0..plain.len().saturating_sub(60)).rev().find(|&i| {
            plain[i] == '│'
                && plain[i + 1..i + 9].iter().all(|c| c.is_ascii_hexdigit())
                && plain[i + 9] == ' '
                && plain[i + 10].is_ascii_hexdigit()
        }) else {
            continue;
        };
        let text = |a: usize, b: usize| plain[a..b].iter().collect::<String>();
        let offset = u64::from_str_radix(&text(start + 1, start + 9), 16).unwrap();
        for k in 0..16 {
            let at = start + 10 + 3 * k + usize::from(k >= 8);
            let Ok(b) = u8::from_str_radix(&text(at, at + 2), 16) else {
                break;
            };
            out.push((offset + k as u64, b, cells[at].1, cells[at].2));
        }
    }
    out
}

#[test]
fn snapshot_groups_pane_and_descriptor_fields() {
    let frame = demo(80, 24, "Tab Tab Tab");
    assert!(frame.contains("Groups: 1 · 64 B descriptors"), "{frame}");
    insta::assert_snapshot!("groups_80x24", frame);
    insta::assert_snapshot!("groups_120x40", demo(120, 40, "Tab Tab Tab"));
    let frame = demo(120, 40, "Tab Tab Tab Enter Down Down Down Down Down Down");
    assert!(frame.contains("▶0x1012 bg_flags"), "{frame}");
    assert!(frame.contains("group 0 bg_flags"), "{frame}");
    insta::assert_snapshot!("group_fields_120x40", frame);
    let frame = demo(80, 24, "Tab Tab Tab Enter End");
    assert!(frame.contains("▶0x103c bg_reserved"), "{frame}");
    insta::assert_snapshot!("group_fields_end_80x24", frame);
}

/// dumpe2fs's group list: per group, the lines from "Group N:" to the next.
fn dumpe2fs_groups(dir: &std::path::Path, image: &str) -> Vec<String> {
    // dumpe2fs exits 1 after a bad descriptor checksum, having printed
    // the whole list.
    let out = std::process::Command::new("dumpe2fs")
        .arg(image)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut groups: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("Group ") && line.contains(": (Blocks") {
            groups.push(String::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push_str(line);
            g.push('\n');
        }
    }
    groups
}

/// The number after `word` in `text`.
fn number_after(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {text}"))
        + word.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().unwrap()
}

#[test]
fn groups_pane_equals_dumpe2fs_and_marks_a_bad_checksum() {
    if !need("mke2fs") || !need("debugfs") || !need("dumpe2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("tree")).unwrap();
    std::fs::write(dir.join("tree/a"), b"a\n").unwrap();
    // 1 KiB blocks, 2048 per group: six groups in 12 MiB.
    sh(
        dir,
        &[
            "mke2fs", "-q", "-t", "ext4", "-b", "1024", "-g", "2048", "-N", "512", "-d", "tree",
            "g.raw", "12M",
        ],
    );
    debugfs_w(dir, "g.raw", "set_bg 2 checksum 0xbeef\n");
    let oracle = dumpe2fs_groups(dir, "g.raw");
    assert_eq!(oracle.len(), 6, "{oracle:?}");
    let frame = layerscope(
        dir,
        &[
            "render",
            "g.raw",
            "--size",
            "100x30",
            "--keys",
            "Tab Tab Tab",
        ],
    )
    .ok()
    .text();
    let rows: Vec<Vec<String>> = frame
        .lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| l.trim_matches('│').trim_start_matches('▶').trim())
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 6, "{frame}");
    for (g, (row, want)) in rows.iter().zip(&oracle).enumerate() {
        // group, checksum ("ok" or "BAD xxxx"), inode table, free blocks,
        // free inodes, block bitmap, inode bitmap, dirs, flags.
        let mut cols = row.clone();
        if cols[1] == "BAD" {
            let v = cols.remove(2);
            cols[1] = format!("BAD {v}");
        }
        assert_eq!(cols[0], g.to_string());
        let csum = want.split("csum 0x").nth(1).unwrap();
        let csum = &csum[..4];
        if want.contains("EXPECTED") {
            assert_eq!(cols[1], format!("BAD {csum}"), "group {g}");
        } else {
            assert_eq!(cols[1], "ok", "group {g}");
        }
        let n = |i: usize| cols[i].parse::<u64>().unwrap();
        assert_eq!(n(2), number_after(want, "Inode table at"), "group {g}");
        let counts = want.lines().find(|l| l.contains(" free blocks, ")).unwrap();
        assert_eq!(n(3), number_after(counts, ""), "group {g} free blocks");
        assert_eq!(n(4), number_after(want, "free blocks,"), "group {g}");
        assert_eq!(n(5), number_after(want, "Block bitmap at"), "group {g}");
        assert_eq!(n(6), number_after(want, "Inode bitmap at"), "group {g}");
        assert_eq!(n(7), number_after(want, "free inodes,"), "group {g}");
        let flags: Vec<&str> = ["INODE_UNINIT", "BLOCK_UNINIT", "ITABLE_ZEROED"]
            .into_iter()
            .zip(["IU", "BU", "IZ"])
            .filter(|(f, _)| want.lines().next().unwrap().contains(f))
            .map(|(_, s)| s)
            .collect();
        assert_eq!(cols.get(8).cloned().unwrap_or_default(), flags.join(","));
    }
    // The bad one, selected: its expected checksum is dumpe2fs's.
    let expected = oracle[2].split("EXPECTED 0x").nth(1).unwrap()[..4].to_owned();
    let frame = layerscope(
        dir,
        &[
            "render",
            "g.raw",
            "--size",
            "100x30",
            "--keys",
            "Tab Tab Tab Down Down",
        ],
    )
    .ok()
    .text()
    .replace('│', " ")
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ");
    assert!(
        frame.contains(&format!("checksum BAD 0xbeef, expected 0x{expected}")),
        "{frame}"
    );
    // Its fields in hex, bg_checksum (the 12th) selected: the descriptor
    // is group 2's slot of the table dumpe2fs places, 64 bytes each.
    let table = number_after(&oracle[0], "Group descriptors at");
    let desc = table * 1024 + 2 * 64;
    let keys = format!("Tab Tab Tab Down Down Enter{}", " Down".repeat(11));
    let frame = layerscope(
        dir,
        &[
            "render", "g.raw", "--size", "120x40", "--ansi", "--keys", &keys,
        ],
    )
    .ok()
    .text();
    let marked = marked_bytes(&frame);
    let underlined: Vec<u64> = marked.iter().filter(|m| m.2).map(|m| m.0).collect();
    let reversed: Vec<(u64, u8)> = marked.iter().filter(|m| m.3).map(|m| (m.0, m.1)).collect();
    assert_eq!(
        underlined,
        (desc..desc + 64)
            .filter(|o| !(desc + 0x1e..desc + 0x20).contains(o))
            .collect::<Vec<_>>()
    );
    assert_eq!(reversed, vec![(desc + 0x1e, 0xef), (desc + 0x1f, 0xbe)]);
}

/// Block numbers of a file in a raw ext image, from `debugfs blocks`.
fn debugfs_blocks(dir: &std::path::Path, image: &str, path: &str) -> Vec<u64> {
    let out = sh(dir, &["debugfs", "-R", &format!("blocks {path}"), image]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect()
}

#[test]
fn tree_marks_and_hit_map_cells_follow_qemu_map_and_debugfs() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let body = |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| (i as u8) ^ seed).collect() };
    std::fs::write(tree.join("a.bin"), body(300 << 10, 1)).unwrap();
    std::fs::write(tree.join("b.bin"), body(8 << 10, 2)).unwrap();
    std::fs::write(dir.join("new.bin"), body(200 << 10, 3)).unwrap();
    sh(
        dir,
        &[
            "mke2fs", "-q", "-t", "ext4", "-b", "4096", "-d", "tree", "base.raw", "32M",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "base.raw",
            "base.qcow2",
        ],
    );
    // The top layer: a new file, and b.bin rewritten in place.
    std::fs::copy(dir.join("base.raw"), dir.join("top.raw")).unwrap();
    debugfs_w(dir, "top.raw", "write new.bin new.bin\n");
    let b = debugfs_blocks(dir, "top.raw", "/b.bin");
    let mut raw = std::fs::read(dir.join("top.raw")).unwrap();
    let at = b[0] as usize * 4096;
    raw[at..at + 4096].fill(0x5a);
    std::fs::write(dir.join("top.raw"), raw).unwrap();
    thin_overlay(
        dir,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("top.raw"),
        "",
        false,
    );
    let map = qemu_map(dir, "top.qcow2");
    let entries = map.as_array().unwrap();
    // The layer holding each block, by qemu (depth 0 is the top, layer 1).
    let layer_of = |block: u64| -> Option<u64> {
        let at = block * 4096;
        let e = entries
            .iter()
            .find(|e| {
                let s = e["start"].as_u64().unwrap();
                at >= s && at < s + e["length"].as_u64().unwrap()
            })
            .unwrap();
        e["present"]
            .as_bool()
            .unwrap()
            .then(|| 1 - e["depth"].as_u64().unwrap())
    };
    let frame = layerscope(
        dir,
        &[
            "render",
            "top.qcow2",
            "--size",
            "100x30",
            "--keys",
            "BackTab Enter",
        ],
    )
    .ok()
    .text();
    let mut seen = Vec::new();
    for name in ["a.bin", "b.bin", "new.bin"] {
        let blocks = debugfs_blocks(dir, "top.raw", &format!("/{name}"));
        let mut layers: Vec<Option<u64>> = blocks.iter().map(|&b| layer_of(b)).collect();
        layers.sort_by(|a, b| b.cmp(a));
        layers.dedup();
        let want: String = layers
            .iter()
            .map(|l| l.map_or('·', |l| char::from_digit(l as u32, 10).unwrap()))
            .collect();
        let row = frame
            .lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("{name} in\n{frame}"));
        let got = row.trim_matches('│').split_whitespace().nth(1).unwrap();
        assert_eq!(got, want, "{name}: {row}");
        seen.push(want);
    }
    // Some file comes from both layers, some from the top alone: the test
    // is not vacuous.
    assert!(
        seen.iter().any(|m| m == "10") && seen.iter().any(|m| m == "1"),
        "{seen:?}"
    );
    // Open new.bin (the tree is sorted: a.bin, b.bin, lost+found first),
    // then look at the hit map: its cells are those of debugfs's blocks.
    let keys = "BackTab Enter Down Down Down Down Enter Tab";
    let frame = layerscope(
        dir,
        &["render", "top.qcow2", "--size", "100x30", "--keys", keys],
    )
    .ok()
    .text();
    assert!(frame.contains("Hit map"), "{frame}");
    let grid: Vec<Vec<char>> = frame
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('└'))
        .map(|l| l.trim_start_matches('│').chars().take(98).collect())
        .collect();
    // The last row is the legend.
    let grid = &grid[..grid.len() - 1];
    let cells = grid.len() * 98;
    let cell = (32u64 << 20).div_ceil(cells as u64);
    let got: Vec<usize> = grid
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| **c == '▓')
        .map(|(i, _)| i)
        .collect();
    let mut want: Vec<usize> = debugfs_blocks(dir, "top.raw", "/new.bin")
        .iter()
        .flat_map(|b| [b * 4096 / cell, (b * 4096 + 4095) / cell])
        .map(|c| c as usize)
        .collect();
    want.sort();
    want.dedup();
    assert!(!want.is_empty());
    assert_eq!(got, want, "{frame}");
}

#[test]
fn snapshot_inode_and_directory_block_in_hex() {
    let frame = demo(120, 40, "g i12 Enter");
    assert!(frame.contains("· inode 12 (directory"), "{frame}");
    insta::assert_snapshot!("goto_inode_120x40", frame);
    insta::assert_snapshot!("goto_inode_80x24", demo(80, 24, "g <12> Enter"));
    let frame = demo(80, 24, "BackTab Enter Down Down Enter Tab");
    assert!(frame.contains("· directory inode 14"), "{frame}");
    insta::assert_snapshot!("directory_block_80x24", frame);
    let frame = demo(120, 40, "BackTab Enter Down Down Down Down Down Enter");
    assert!(
        frame.contains("▾ srv") && frame.contains("directory inode"),
        "{frame}"
    );
    insta::assert_snapshot!("directory_block_tree_120x40", frame);
}

#[test]
fn snapshot_search_prompt_and_match() {
    let frame = demo(80, 24, "/ hos");
    assert!(frame.contains("search names in the tree: hos"), "{frame}");
    insta::assert_snapshot!("search_prompt_80x24", frame);
    let frame = demo(120, 40, "/ host Enter n");
    assert!(
        frame.contains("/etc/hosts (match 2 of 2; n: next)"),
        "{frame}"
    );
    insta::assert_snapshot!("search_second_match_120x40", frame);
    let frame = demo(80, 24, "/ app Enter");
    assert!(frame.contains("/srv/www/app.js (match 1 of "), "{frame}");
    assert!(
        frame.contains("app.js") && frame.contains(" 21 "),
        "{frame}"
    );
    insta::assert_snapshot!("search_match_marks_80x24", frame);
}

#[test]
fn search_visits_every_match_find_lists_and_cancels() {
    if !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    make_tree(&tree, 40);
    // The oracle: find(1) on the tree mke2fs copies.
    let out = sh(&tree, &["find", ".", "-iname", "*F1*"]);
    let mut want: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches('.').to_owned())
        .collect();
    want.sort();
    assert!(want.len() > 5, "{want:?}");
    sh(
        dir,
        &[
            "mke2fs", "-q", "-t", "ext4", "-b", "4096", "-d", "tree", "t.raw", "64M",
        ],
    );
    // `/`, then n through every match and once around: the bar names
    // each, the tree shows it.
    let mut keys = "/ F1 Enter".to_owned();
    let mut got = Vec::new();
    for i in 0..=want.len() {
        let frame = layerscope(
            dir,
            &["render", "t.raw", "--size", "100x40", "--keys", &keys],
        )
        .ok()
        .text();
        let bar = frame.lines().last().unwrap().trim().to_owned();
        let expect = format!("(match {} of {};", i % want.len() + 1, want.len());
        assert!(bar.contains(&expect), "{bar}\n{frame}");
        let path = bar.split(" (match").next().unwrap().to_owned();
        let name = path.rsplit('/').next().unwrap();
        assert!(
            frame.lines().any(|l| l.contains(&format!(" {name} "))),
            "{name} not in the tree:\n{frame}"
        );
        got.push(path);
        keys.push_str(" n");
    }
    assert_eq!(got.first(), got.last(), "n wraps around");
    got.pop();
    got.sort();
    assert_eq!(got, want);
    // A cancelled search stops at once.
    let chain = layerscope::block::chain::open_chain(
        dir.join("t.raw").to_str().unwrap(),
        Default::default(),
        &layerscope::block::chain::FsOpener,
    )
    .unwrap();
    let reader =
        std::sync::Arc::new(layerscope::block::layered::LayeredReader::new(&chain).unwrap());
    let fs = layerscope::fs::ext::Ext4::open(reader).unwrap();
    let cancel = std::sync::atomic::AtomicU64::new(1);
    let found = layerscope::ui::search::search(&fs, 0, "f1", &cancel, 0);
    assert_eq!(found.stopped, Some("cancelled"));
    assert!(found.matches.is_empty());
    let found = layerscope::ui::search::search(&fs, 0, "f1", &cancel, 1);
    assert_eq!(found.matches.len(), want.len());
}

/// The underlined-or-reversed bytes of an `--ansi` frame's hex pane, in
/// order: (offset, byte).
fn marked(frame: &str) -> Vec<(u64, u8)> {
    marked_bytes(frame)
        .into_iter()
        .filter(|m| m.2 || m.3)
        .map(|m| (m.0, m.1))
        .collect()
}

#[test]
fn goto_inode_and_directory_blocks_mark_their_fields_where_debugfs_says() {
    if !need("mke2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("tree")).unwrap();
    std::fs::write(dir.join("tree/a.txt"), b"hi\n").unwrap();
    std::fs::write(dir.join("tree/bee.txt"), b"hello\n").unwrap();
    sh(
        dir,
        &[
            "mke2fs", "-q", "-t", "ext4", "-b", "1024", "-d", "tree", "t.raw", "8M",
        ],
    );
    let debugfs = |req: &str| -> String {
        String::from_utf8_lossy(&sh(dir, &["debugfs", "-R", req, "t.raw"]).stdout).into_owned()
    };
    // An inode: its slot is where debugfs imap puts it; its first field,
    // i_mode, holds debugfs stat's permissions and a regular file's type.
    let ino = number_after(&debugfs("stat /bee.txt"), "Inode:");
    let imap = debugfs(&format!("imap <{ino}>"));
    let block = number_after(&imap, "located at block");
    let off = u64::from_str_radix(imap.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    let slot = block * 1024 + off;
    for keys in [format!("g i{ino} Enter"), format!("g <{ino}> Enter")] {
        let frame = layerscope(
            dir,
            &[
                "render", "t.raw", "--size", "120x40", "--ansi", "--keys", &keys,
            ],
        )
        .ok()
        .text();
        assert!(frame.contains(&format!("inode {ino} (regular")), "{frame}");
        let m = marked(&frame);
        assert_eq!(m.first().map(|b| b.0), Some(slot), "{frame}");
        assert!(m.iter().all(|b| b.0 >= slot && b.0 < slot + 256));
        let mode = u16::from(m[0].1) | u16::from(m[1].1) << 8;
        let stat = debugfs(&format!("stat <{ino}>"));
        let perms = stat
            .split("Mode:")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        assert_eq!(mode, 0o100000 | u16::from_str_radix(perms, 8).unwrap());
    }
    // Opening / shows its first block (debugfs blocks), each entry's
    // inode, rec_len, name_len, type and name marked, as debugfs ls lists
    // them.
    let first = number_after(&debugfs("blocks /"), "");
    let frame = layerscope(
        dir,
        &[
            "render",
            "t.raw",
            "--size",
            "120x40",
            "--ansi",
            "--keys",
            "BackTab Enter",
        ],
    )
    .ok()
    .text();
    let m = marked(&frame);
    assert_eq!(m.first().map(|b| b.0), Some(first * 1024), "{frame}");
    let bytes: Vec<u8> = m.iter().map(|b| b.1).collect();
    let listing = debugfs("ls /");
    let words: Vec<&str> = listing.split_whitespace().collect();
    let mut at = 0;
    for entry in words.chunks(3) {
        let (ino, rec_len, name) = (
            entry[0].parse::<u32>().unwrap(),
            entry[1]
                .trim_matches(|c| c == '(' || c == ')')
                .parse::<u16>()
                .unwrap(),
            entry[2],
        );
        let e = &bytes[at..at + 8 + name.len()];
        assert_eq!(&e[..4], ino.to_le_bytes(), "{name}");
        assert_eq!(&e[4..6], rec_len.to_le_bytes(), "{name}");
        assert_eq!(usize::from(e[6]), name.len(), "{name}");
        assert_eq!(&e[8..], name.as_bytes());
        at += 8 + name.len();
    }
    assert_eq!(at, bytes.len(), "marked bytes beyond the entries");
    assert!(words.len() >= 15, "{listing}");
}

#[test]
fn sixteen_colour_frames_tell_the_layers_apart() {
    // --ansi frames use the 16 ANSI colours: the chain pane's three layer
    // marks each get their own.
    let frame = render_frame(layerscope::demo::open().unwrap(), 120, 40, "", true);
    let mut codes = Vec::new();
    for line in frame.lines().take(5) {
        if let Some(at) = line.find('█') {
            let sgr = &line[..at];
            let code = sgr.rsplit("\x1b[").next().unwrap().trim_end_matches('m');
            codes.push(code.to_owned());
        }
    }
    assert_eq!(codes.len(), 3, "{frame}");
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 3, "layers share a colour: {codes:?}");
    assert!(codes.iter().all(|c| {
        let n: u8 = c.split(';').nth(1).unwrap().parse().unwrap();
        (30..=37).contains(&n) || (90..=97).contains(&n)
    }));
}

#[test]
fn hostile_names_in_the_tree_and_search_are_escaped() {
    use std::os::unix::ffi::OsStrExt;
    if !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("evil\x1b[2J\x07\nname"), b"x").unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"evil\xff\xfebytes");
    std::fs::write(tree.join(bad), b"y").unwrap();
    sh(
        dir,
        &["mke2fs", "-q", "-t", "ext4", "-d", "tree", "h.raw", "8M"],
    );
    for keys in ["BackTab Enter", "/ evil Enter", "/ evil Enter n"] {
        let frame = layerscope(
            dir,
            &["render", "h.raw", "--size", "100x30", "--keys", keys],
        )
        .ok()
        .text();
        assert!(
            !frame.chars().any(|c| c.is_control() && c != '\n'),
            "raw control characters after {keys:?}:\n{frame:?}"
        );
        assert!(frame.contains("evil\\x1b[2J\\x07\\nname"), "{frame}");
        assert!(frame.contains("evil\\xff\\xfebytes"), "{frame}");
    }
}

/// The module a `super::`/`crate::ui::` path names, from `base` (a module
/// path under src/): descends while the next segment is a module file.
fn ui_target(root: &std::path::Path, mut base: Vec<String>, rest: &str) -> Vec<Vec<String>> {
    let is_module = |m: &[String]| {
        // `m` starts with `crate`, the directory `root` is.
        let p = root.join(m[1..].join("/"));
        p.with_extension("rs").is_file() || p.join("mod.rs").is_file()
    };
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        // `{a, b::c, d}`: each first segment.
        let mut depth = 0;
        let mut items = vec![String::new()];
        for ch in group.chars() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => items.push(String::new()),
                c => items.last_mut().unwrap().push(c),
            }
        }
        return items
            .iter()
            .flat_map(|i| ui_target(root, base.clone(), i))
            .collect();
    }
    for seg in rest.split("::") {
        let name: String = seg
            .trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut next = base.clone();
        next.push(name);
        if next.last().is_some_and(|n| !n.is_empty()) && is_module(&next) {
            base = next;
        } else {
            break;
        }
    }
    vec![base]
}

/// The component a module belongs to: a top module of `ui`, or a pane.
fn ui_node(m: &[String]) -> String {
    match m {
        [_, ui, panes, pane, ..] if ui == "ui" && panes == "panes" => format!("panes::{pane}"),
        [_, ui, top, ..] if ui == "ui" => top.clone(),
        _ => "ui".into(),
    }
}

/// The UI's modules import one another without a circle (each pane and
/// each top module of `src/ui` is a node; the worker's files are one), no
/// module uses the `ui` facade, and no file is over 500 lines.
#[test]
fn ui_modules_form_no_import_circle_and_stay_small() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.join("ui")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines = text.lines().count();
        assert!(lines <= 500, "{} has {lines} lines", f.display());
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let mut module: Vec<String> = std::iter::once("crate".to_owned())
            .chain(rel.iter().map(|c| c.to_string_lossy().into_owned()))
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        let from = ui_node(&module);
        let parent: Vec<String> = module[..module.len() - 1].to_vec();
        // Up to the unit tests (whose `super` is the file's own module).
        for line in text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")) {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (key, base) in [
                ("super::", &parent),
                ("crate::ui::", &vec!["crate".into(), "ui".into()]),
            ] {
                for (at, _) in code.match_indices(key) {
                    // `super::super::` would be a grand-parent: not used.
                    let rest = &code[at + key.len()..];
                    for target in ui_target(&src, base.clone(), rest) {
                        let to = ui_node(&target);
                        if to != from && from != "ui" {
                            edges.entry(from.clone()).or_default().insert(to);
                        }
                    }
                }
            }
        }
    }
    for (from, tos) in &edges {
        assert!(
            !tos.contains("ui"),
            "{from} uses the ui facade (src/ui/mod.rs): {tos:?}"
        );
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("import circle: {} -> {n}", path[i..].join(" -> "));
        }
        path.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, path, done);
        }
        path.pop();
        done.insert(n.to_owned());
    }
    let mut done = Default::default();
    for n in edges.keys() {
        visit(n, &edges, &mut Vec::new(), &mut done);
    }
    // The check sees the structure: panes use the shared context, the
    // app uses the panes.
    assert!(edges["app"].contains("panes::tree"), "{edges:?}");
    assert!(edges["panes::tree"].contains("context"), "{edges:?}");
}

/// Issue 14 item 5: the tree keeps its state across layer switches where
/// the path still exists. The directories open as of the top are open as
/// of the base without a key; the selection stays on the same path (Enter
/// on it shows the same bytes as going there in the base's own view); a
/// path the base lacks gives way to what is left of it.
#[test]
fn tree_state_is_kept_across_layer_switches() {
    // Tree: open / and /etc, select hostname; Chain: choose the base.
    let switched = demo(
        120,
        40,
        "BackTab Enter Down Down Enter Down BackTab Down Down Enter",
    );
    assert!(switched.contains("Tree (as of layer 0)"), "{switched}");
    assert!(
        switched.contains("▾ etc") && switched.contains("hostname"),
        "{switched}"
    );
    let hex_title = |frame: &str| {
        frame
            .lines()
            .find_map(|l| {
                l.find("Hex @")
                    .map(|i| l[i..].split('─').next().unwrap().to_owned())
            })
            .unwrap_or_default()
    };
    // Enter on the kept selection, and on hostname reached in the base.
    let restored = demo(
        120,
        40,
        "BackTab Enter Down Down Enter Down BackTab Down Down Enter Tab Enter",
    );
    let direct = demo(
        120,
        40,
        "BackTab BackTab Down Down Enter Tab Enter Down Down Enter Down Enter",
    );
    assert!(hex_title(&direct).contains("(as of layer 0)"), "{direct}");
    assert_eq!(hex_title(&restored), hex_title(&direct));
    // The base's /etc/hostname: "demo-base\n".
    assert!(
        restored.contains("64 65 6d 6f 2d 62 61 73  65 0a"),
        "{restored}"
    );
    // /srv/www open on the top; the base has /srv but no www.
    let gone = demo(
        120,
        40,
        "BackTab Enter Down Down Down Down Down Enter Down Enter Down BackTab Down Down Enter",
    );
    assert!(gone.contains("Tree (as of layer 0)"), "{gone}");
    assert!(gone.contains("▾ srv") && !gone.contains("www"), "{gone}");
}
