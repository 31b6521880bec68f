//! The real binary in a real terminal (tmux): keys in, screen out. Checks
//! that a user can open a chain, jump to bytes, switch layers, quit, and
//! get the terminal back; and that the UI keeps answering while its NBD
//! server dies.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &Path, cols: u16, rows: u16, command: &str) -> Tmux {
        let socket = format!("layerscope-test-{}-{}", std::process::id(), rows);
        let t = Tmux { socket };
        let ok = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                "-c",
                dir.to_str().unwrap(),
                command,
            ])
            .env("TERM", "xterm-256color")
            .status()
            .unwrap();
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    /// Presses keys: tmux key names (`Enter`, `BTab`, `Escape`) as keys,
    /// anything else typed literally (tmux would read `0x400` as a key
    /// code).
    fn keys(&self, keys: &[&str]) {
        const NAMES: &[&str] = &[
            "Enter", "Tab", "BTab", "Escape", "Up", "Down", "PageUp", "PageDown", "Home", "End",
        ];
        for k in keys {
            let mut args = vec!["-L", &self.socket, "send-keys", "-t", "t"];
            if !NAMES.contains(k) {
                args.push("-l");
            }
            args.push(k);
            let st = Command::new("tmux").args(&args).status().unwrap();
            assert!(st.success());
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen contains `text`.
    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {text:?}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn open_jump_switch_layer_quit_in_a_real_terminal() {
    if !need("tmux") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    for f in ["base.qcow2", "update.qcow2", "top.qcow2"] {
        std::fs::copy(assets.join(f), dir.join(f)).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let t = Tmux::start(
        dir,
        100,
        30,
        &format!("{bin} --log ui.log top.qcow2; echo EXITED-$?; sleep 60"),
    );
    t.wait_for("Hex @ 0x0");
    // A worker error (no such inode): shown in the bar, logged to the file.
    t.keys(&["g", "i99999", "Enter"]);
    t.wait_for("inode 99999 does not exist");
    t.keys(&["g", "0x400", "Enter"]);
    // The title changes at once, the bytes when the worker answers (under
    // load, a frame or two later).
    t.wait_for("Hex @ 0x400");
    // The superblock magic.
    t.wait_for("53 ef 01 00");
    // The tree: open /, open /etc, Enter on hosts shows its bytes.
    t.keys(&[
        "BTab", "Enter", "Down", "Down", "Enter", "Down", "Down", "Enter",
    ]);
    t.wait_for("127.0.0.1 localh");
    // Search: the tree opens down to the match, the bar names it.
    t.keys(&["/", "motd", "Enter"]);
    t.wait_for("/etc/motd (match 1 of 1; n: next)");
    // Back to the hex view (the search left the focus on the tree).
    t.keys(&["Tab"]);
    // To the chain pane, choose the base layer.
    t.keys(&["BTab", "BTab", "Down", "Down", "Enter"]);
    t.wait_for("▶█0 base.qcow2");
    // The Groups pane (as of the base): the descriptor table, and its
    // fields after Enter.
    t.keys(&["Tab", "Tab", "Tab", "Tab", "Tab"]);
    t.wait_for("Groups: 1 · 64 B descriptors");
    t.keys(&["Enter"]);
    t.wait_for("▶0x1000 bg_block_bitmap_lo");
    t.keys(&["Tab", "?"]);
    let screen = t.wait_for("Keys");
    t.keys(&["Escape", "q"]);
    let s = t.wait_for("EXITED-0");
    assert!(
        !s.contains("Hex @"),
        "the UI's screen is gone after quitting:\n{s}"
    );
    // The log has the session; the screen never showed a log line.
    let log = std::fs::read_to_string(dir.join("ui.log")).unwrap();
    for line in ["UI started", "request served", "request failed", "UI quit"] {
        assert!(log.contains(line), "{line:?} not in the log:\n{log}");
    }
    assert!(log.contains("inode 99999 does not exist"), "{log}");
    for s in [&screen, &s] {
        assert!(
            !s.contains("request served") && !s.contains(" DEBUG ") && !s.contains(" INFO "),
            "a log line on screen:\n{s}"
        );
    }
}

#[test]
fn nbd_pane_shows_a_dead_server_and_keys_still_work() {
    if !need("tmux") || !need("qemu-nbd") || !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "disk.qcow2",
            "64M",
        ],
    );
    qemu_io(dir, "disk.qcow2", &["write -P 0x41 0 1M"]);
    let sock = dir.join("nbd.sock");
    let mut server = Command::new("qemu-nbd")
        .args([
            "--read-only",
            "--persistent",
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            "disk.qcow2",
        ])
        .current_dir(dir)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let t = Tmux::start(
        dir,
        120,
        40,
        &format!("LAYERSCOPE_LOG=nbd.log {bin} '{uri}'; echo EXITED-$?; sleep 60"),
    );
    t.wait_for("Ready");
    t.wait_for("41 41 41");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&sock);
    // Holes are known from cached block status and still read as zeros;
    // data not yet cached needs the server, and the status pane says it
    // is gone.
    t.keys(&["g", "32M", "Enter"]);
    t.wait_for("Hex @ 0x2000000");
    t.keys(&["g", "512K", "Enter"]);
    let s = t.wait_for("Failed");
    assert!(s.contains("last error"), "{s}");
    // The UI still answers.
    t.keys(&["?"]);
    let screen = t.wait_for("Keys");
    t.keys(&["Escape", "q"]);
    t.wait_for("EXITED-0");
    // The state changes are in the log (LAYERSCOPE_LOG), not on screen.
    let log = std::fs::read_to_string(dir.join("nbd.log")).unwrap();
    assert!(
        log.contains("NBD connection state") && log.contains("to=Ready"),
        "{log}"
    );
    assert!(log.contains("to=Failed"), "{log}");
    assert!(!screen.contains("NBD connection state"), "{screen}");
}
