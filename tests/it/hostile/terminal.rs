//! Terminal safety: names, labels, the last-mounted path, backing file
//! names, GPT partition names, an NBD export's description and a server's
//! error message holding every C0 and C1 control, DEL, the bidi controls
//! and zero-width characters reach neither a terminal (run through
//! `script`, a real pseudo-terminal) nor JSON raw, and what they say is
//! still there, escaped.
use std::path::Path;

use layerscope::escape::is_unsafe;

use super::nbd::handshake;
use super::{bounded, run};
use crate::util::{debugfs_w, need, sh, thin_overlay};

/// Every character the policy escapes that a file name can hold (not NUL
/// or `/`), a few at a time so names stay under 255 bytes.
fn nasty() -> Vec<String> {
    let mut all: Vec<char> = (1u32..0x20)
        .chain([0x7f])
        .chain(0x80..0xa0)
        .filter_map(char::from_u32)
        .collect();
    all.extend(
        [
            0x61c, 0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e,
            0x2060, 0x2066, 0x2067, 0x2068, 0x2069, 0xfeff, 0xad, 0x2028, 0x2029, 0xe0041,
        ]
        .into_iter()
        .filter_map(char::from_u32),
    );
    assert!(all.iter().all(|&c| is_unsafe(c)));
    all.chunks(8)
        .enumerate()
        .map(|(i, cs)| format!("n{i:02}{}x", cs.iter().collect::<String>()))
        .collect()
}

/// No character the policy escapes, but line ends (`\r` from the
/// terminal's newline translation).
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Some(c) = text
        .chars()
        .find(|&c| is_unsafe(c) && c != '\n' && c != '\r')
    {
        panic!("{what}: raw {c:?} (U+{:04X}) in:\n{text}", u32::from(c));
    }
}

/// Runs layerscope with its output in a pseudo-terminal (`script`),
/// returning what the terminal received, then what went to stderr. Stderr
/// goes to a file: on a terminal it would carry the progress bars' own
/// (legitimate) escape sequences, which no check could tell from a raw
/// one out of a name.
fn in_terminal(dir: &Path, args: &[&str]) -> Vec<u8> {
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
    let quoted: Vec<String> = std::iter::once(bin)
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let err = dir.join("stderr.txt");
    let line = format!("{} 2>{}", quoted.join(" "), quote(err.to_str().unwrap()));
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let mut all = out.stdout;
    all.extend(std::fs::read(&err).unwrap_or_default());
    all
}

/// The image: an ext4 with the names in a directory, a label and a last
/// mounted path holding them, under an overlay that adds one more, in a
/// GPT partition whose name holds them too; the base file's own name has
/// a bidi override.
fn build(dir: &Path) -> Vec<String> {
    let names = nasty();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    for n in &names {
        std::fs::write(tree.join("d").join(n), n.as_bytes()).unwrap();
    }
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-O",
            "^metadata_csum",
            "-L",
            "l\u{202e}\u{200b}\u{9b}x",
            "-d",
            tree.to_str().unwrap(),
            "fs.raw",
            "8M",
        ],
    );
    // s_last_mounted (64 bytes at 0x88 of the superblock).
    let mut img = std::fs::read(dir.join("fs.raw")).unwrap();
    let lm = "/mnt/\u{202e}\u{2066}\u{9d}\x1b]0;x\x07\u{200d}";
    img[1024 + 0x88..1024 + 0x88 + 64].fill(0);
    img[1024 + 0x88..1024 + 0x88 + lm.len()].copy_from_slice(lm.as_bytes());
    std::fs::write(dir.join("fs.raw"), &img).unwrap();
    // A GPT disk with the filesystem in partition 1.
    let disk = "b\u{202e}ase.raw";
    let mut whole = vec![0u8; 1 << 20];
    whole.extend_from_slice(&img);
    whole.resize(whole.len() + (1 << 20), 0);
    std::fs::write(dir.join(disk), &whole).unwrap();
    let mut sfdisk = std::process::Command::new("sfdisk")
        .args(["-q", disk])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(
            "label: gpt\nstart=2048, size=16384, name=\"p\u{202e}\u{200b}\x1b[2J\u{2068}q\"\n"
                .as_bytes(),
        )
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let flat = dir.join("flat.raw");
    std::fs::copy(dir.join(disk), &flat).unwrap();
    // The overlay adds a file: written with debugfs into the partition.
    let part = dir.join("part.raw");
    std::fs::write(
        &part,
        &std::fs::read(&flat).unwrap()[1 << 20..(1 << 20) + (8 << 20)],
    )
    .unwrap();
    std::fs::write(dir.join("body"), b"new").unwrap();
    debugfs_w(
        dir,
        "part.raw",
        &format!(
            "write {} \"d/added\u{202e}\u{9b}\"\n",
            dir.join("body").display()
        ),
    );
    let mut f = std::fs::read(&flat).unwrap();
    f[1 << 20..(1 << 20) + (8 << 20)].copy_from_slice(&std::fs::read(&part).unwrap());
    std::fs::write(&flat, f).unwrap();
    thin_overlay(dir, "top.qcow2", disk, "raw", &flat, "", false);
    names
}

#[test]
fn hostile_strings_reach_no_terminal_and_no_json_raw() {
    if !["mke2fs", "debugfs", "sfdisk", "qemu-img", "script"]
        .iter()
        .all(|t| need(t))
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let names = build(dir);
    let text_commands: &[&[&str]] = &[
        &["ls", "top.qcow2", "/d"],
        &["ls", "-l", "-R", "top.qcow2", "/"],
        &["info", "top.qcow2"],
        &["stat", "top.qcow2", "<12>"],
        &["chain", "top.qcow2"],
        &["map", "top.qcow2"],
        &["diff", "top.qcow2"],
        &["blame", "-R", "top.qcow2", "/d"],
        &["groups", "top.qcow2"],
        &["ls", "top.qcow2", "/d/\u{202e}missing\u{9b}"],
    ];
    for args in text_commands {
        let shown = in_terminal(dir, args);
        assert_clean(&format!("{args:?} in a terminal"), &shown);
        let r = run(dir, args, b"");
        bounded(&r, &format!("{args:?}"));
        assert_clean(&format!("{args:?}"), &r.stdout);
        assert_clean(&format!("{args:?} stderr"), r.stderr.as_bytes());
    }
    // What the names say is there, escaped.
    let ls = run(dir, &["ls", "top.qcow2", "/d"], b"");
    assert!(ls.text().contains("n00\\x01\\x02"), "{}", ls.text());
    let info = run(dir, &["info", "top.qcow2"], b"").text();
    assert!(info.contains("\\u{202e}"), "{info}");
    for args in [
        &["ls", "--json", "-R", "top.qcow2", "/"][..],
        &["info", "--json", "top.qcow2"],
        &["stat", "--json", "top.qcow2", "<12>"],
        &["chain", "--json", "top.qcow2"],
        &["diff", "--json", "top.qcow2"],
        &["blame", "--json", "-R", "top.qcow2", "/d"],
    ] {
        let r = run(dir, args, b"");
        bounded(&r, &format!("{args:?}"));
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_clean(&format!("{args:?}"), &r.stdout);
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        if args[0] == "ls" {
            // JSON keeps the names exactly: escapes decode to the raw text.
            let listed: Vec<&str> = v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["name"].as_str())
                .collect();
            for n in &names {
                assert!(listed.contains(&n.as_str()), "{n:?} not in {listed:?}");
            }
        }
    }
    // The frame of the UI with the directory open.
    let r = run(
        dir,
        &[
            "render",
            "top.qcow2",
            "--size",
            "120x40",
            "--keys",
            "Tab Tab j Enter",
        ],
        b"",
    );
    bounded(&r, "render");
    assert_clean("render", &r.stdout);
}

/// An export description and a server's error message with the same
/// characters: `nbd-info` (text in a terminal, JSON) and a failed read.
#[test]
fn hostile_server_strings_are_escaped() {
    if !need("script") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let sock = dir.join("desc.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let evil = "desc\u{202e}\u{200b}\u{9b}31m\x1b[2J\x07\u{feff}"
        .as_bytes()
        .to_vec();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            if handshake(&mut s, 1 << 20, Some(&evil)).is_err() {
                continue;
            }
            // Every read fails with the same words.
            let mut req = [0u8; 28];
            while s.read_exact(&mut req).is_ok() {
                if req[7] == 7 {
                    // Block status: all data.
                    let mut r = 0x668e_33efu32.to_be_bytes().to_vec();
                    r.extend_from_slice(&1u16.to_be_bytes());
                    r.extend_from_slice(&5u16.to_be_bytes());
                    r.extend_from_slice(&req[8..16]);
                    r.extend_from_slice(&12u32.to_be_bytes());
                    r.extend_from_slice(&1u32.to_be_bytes());
                    r.extend_from_slice(&req[24..28]);
                    r.extend_from_slice(&0u32.to_be_bytes());
                    let _ = s.write_all(&r);
                    continue;
                }
                if req[7] != 0 {
                    break;
                }
                let mut p = 5u32.to_be_bytes().to_vec();
                p.extend_from_slice(&(evil.len() as u16).to_be_bytes());
                p.extend_from_slice(&evil);
                let mut r = 0x668e_33efu32.to_be_bytes().to_vec();
                r.extend_from_slice(&1u16.to_be_bytes());
                r.extend_from_slice(&((1u16 << 15) + 1).to_be_bytes());
                r.extend_from_slice(&req[8..16]);
                r.extend_from_slice(&(p.len() as u32).to_be_bytes());
                r.extend_from_slice(&p);
                let _ = s.write_all(&r);
            }
        }
    });
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    for args in [&["nbd-info", &uri][..], &["read", "--length", "4K", &uri]] {
        let shown = in_terminal(dir, args);
        assert_clean(&format!("{args:?} in a terminal"), &shown);
        let text = String::from_utf8_lossy(&shown);
        // Said, escaped (an error line escapes the library's message
        // once more: its backslashes are doubled).
        for part in [
            "desc", "u{202e}", "u{200b}", "u{9b}31m", "x1b[2J", "x07", "u{feff}",
        ] {
            assert!(text.contains(part), "{args:?}: {part:?} not in {text}");
        }
    }
    let r = run(dir, &["nbd-info", "--json", &uri], b"");
    bounded(&r, "nbd-info --json");
    assert_clean("nbd-info --json", &r.stdout);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(
        v["description"].as_str(),
        Some("desc\u{202e}\u{200b}\u{9b}31m\x1b[2J\x07\u{feff}")
    );
    drop(server);
}
