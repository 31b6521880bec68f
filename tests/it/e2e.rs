//! The real binary in a real terminal (tmux): keys in, screen out. Checks
//! that a user can open a chain, jump to bytes, switch layers, quit, and
//! get the terminal back; and that the UI keeps answering while its NBD
//! server dies.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// A tmux server of our own (its own socket), killed on drop.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn start(dir: &Path, cols: u16, rows: u16, command: &str) -> Tmux {
        // Tests run in parallel: each its own server.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("layerscope-test-{}-{rows}-{n}", std::process::id());
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
    pub(crate) fn keys(&self, keys: &[&str]) {
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
    pub(crate) fn wait_for(&self, text: &str) -> String {
        self.wait_until(text, |s| s.contains(text))
    }

    /// Waits for a whole screen that passes `ok`. A capture can land
    /// between a resize and the redraw, or half-way through a frame, so a
    /// layout is checked on the first screen that is all of it, not on the
    /// first one that shows one pane's title.
    fn wait_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}; screen:\n{s}"
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
    // The tree: open /, open /etc, Enter on hosts shows its bytes. Each
    // step waits for the listing it moves in: keys pressed before the
    // rows arrive have no rows to move over (under load the worker's
    // answer can take longer than the keys between).
    t.keys(&["BTab", "Enter"]);
    t.wait_for("▸ etc");
    t.keys(&["Down", "Down", "Enter"]);
    t.wait_for("hosts");
    t.keys(&["Down", "Down", "Enter"]);
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
    t.wait_until("the failed read and its last error", |s| {
        s.contains("Failed") && s.contains("last error")
    });
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

impl Tmux {
    /// A tmux format for the pane (`#{alternate_on}`, `#{pane_pid}`).
    fn display(&self, format: &str) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "display", "-p", "-t", "t", format])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn resize(&self, cols: u16, rows: u16) {
        let st = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "resize-window",
                "-t",
                "t",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Bytes typed as they are (an SGR mouse report, a control key).
    fn raw(&self, bytes: &str) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", "-l", bytes])
            .status()
            .unwrap();
        assert!(st.success());
        std::thread::sleep(Duration::from_millis(60));
    }

    /// The pid of the pane's command's child (the UI under `sh -c`).
    fn ui_pid(&self) -> u32 {
        let shell = self.display("#{pane_pid}");
        let start = Instant::now();
        loop {
            let out = Command::new("ps")
                .args(["-o", "pid=", "--ppid", &shell])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Some(pid) = text.split_whitespace().next() {
                return pid.parse().unwrap();
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no UI process");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `#{alternate_on} #{mouse_any_flag}` is `want`.
    fn wait_modes(&self, want: &str) {
        let start = Instant::now();
        loop {
            let got = self.display("#{alternate_on} #{mouse_any_flag}");
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "modes {got:?}, want {want:?}; screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn demo_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    for f in ["base.qcow2", "update.qcow2", "top.qcow2"] {
        std::fs::copy(assets.join(f), d.path().join(f)).unwrap();
    }
    d
}

#[test]
fn resizing_across_the_layouts_mid_session() {
    if !need("tmux") {
        return;
    }
    let d = demo_dir();
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let t = Tmux::start(
        d.path(),
        200,
        60,
        &format!("{bin} top.qcow2; echo EXITED-$?; sleep 60"),
    );
    // 200x60: every pane at once, no tab strip.
    t.wait_until("every pane at 200x60", |s| {
        [
            "┌Groups",
            "┌Chain",
            "┌Status",
            "┌Superblock",
            "┌Tree",
            "┌Hex",
            "┌Hit map",
        ]
        .iter()
        .all(|pane| s.contains(pane))
            && !s.contains("1 Chain  2 Tree")
    });
    // 120x40: the tab strip says what is not on screen, the tree is on it
    // and the groups are not.
    t.resize(120, 40);
    let fits = |s: &str, cols: usize| s.lines().all(|l| l.chars().count() <= cols);
    t.wait_until("the 120x40 layout", |s| {
        fits(s, 120) && s.contains("not shown") && s.contains("┌Tree") && !s.contains("┌Groups")
    });
    // A digit brings in a hidden pane.
    t.keys(&["6"]);
    t.wait_for("┌Groups");
    // 80x24: one pane and the tabs, the pane the digit chose.
    t.resize(80, 24);
    t.wait_until("the 80x24 layout showing Groups", |s| {
        fits(s, 80) && s.contains("1 Chain  2 Tree") && s.contains("┌Groups") && !s.contains("┌Hex")
    });
    t.keys(&["3"]);
    t.wait_for("┌Hex @");
    // Back to the full layout.
    t.resize(160, 45);
    t.wait_for("┌Superblock");
    t.keys(&["q"]);
    t.wait_for("EXITED-0");
}

#[test]
fn sigterm_and_sighup_give_the_terminal_back() {
    if !need("tmux") {
        return;
    }
    let d = demo_dir();
    let bin = env!("CARGO_BIN_EXE_layerscope");
    for (signal, status) in [("TERM", 143), ("HUP", 129)] {
        let t = Tmux::start(
            d.path(),
            100,
            30,
            &format!("{bin} top.qcow2; echo EXITED-$?; sleep 60"),
        );
        t.wait_for("Hex @ 0x0");
        t.wait_modes("1 1");
        let pid = t.ui_pid();
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        // The process ends by the signal, after giving the screen back.
        let s = t.wait_for(&format!("EXITED-{status}"));
        assert!(!s.contains("Hex @"), "{s}");
        t.wait_modes("0 0");
    }
}

#[test]
fn ctrl_z_suspends_and_fg_redraws() {
    if !need("tmux") || !need("bash") {
        return;
    }
    let d = demo_dir();
    let bin = env!("CARGO_BIN_EXE_layerscope");
    // An interactive shell, for job control.
    let t = Tmux::start(d.path(), 100, 30, "bash --norc --noprofile -i");
    std::thread::sleep(Duration::from_millis(300));
    // Alone on its line: in a list (`a; b`) the shell would go on to `b`
    // when `a` stops.
    t.raw(&format!("{bin} top.qcow2\r"));
    t.wait_for("Hex @ 0x0");
    t.wait_modes("1 1");
    t.keys(&["g", "0x400", "Enter"]);
    t.wait_for("Hex @ 0x400");
    // Ctrl-Z: the shell's screen, the job stopped, modes off.
    t.raw("\x1a");
    t.wait_for("Stopped");
    t.wait_modes("0 0");
    t.raw("fg\r");
    // The UI again, as it was.
    t.wait_modes("1 1");
    t.wait_for("Hex @ 0x400");
    t.wait_for("53 ef 01 00");
    t.keys(&["q"]);
    t.wait_modes("0 0");
    t.raw("echo EXITED-$?\r");
    t.wait_for("EXITED-0");
}

#[test]
fn mouse_clicks_select_tabs_and_rows_and_the_wheel_scrolls_the_pane_under_it() {
    if !need("tmux") {
        return;
    }
    let d = demo_dir();
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let t = Tmux::start(
        d.path(),
        120,
        40,
        &format!("{bin} top.qcow2; echo EXITED-$?; sleep 60"),
    );
    t.wait_for("Hex @ 0x0");
    t.wait_modes("1 1");
    // SGR reports are 1-based. The tab strip's "5 Superblock" (row 1):
    // the superblock takes the tree's place.
    let s = t.screen();
    let x = s.lines().next().unwrap().find("5 Superblock").unwrap() + 2;
    t.raw(&format!("\x1b[<0;{x};1M\x1b[<0;{x};1m"));
    t.wait_for("┌Superblock");
    // Back to the tree by its tab; a click on the root's row (the first
    // inside the tree's frame, selected already) opens it, and the hex
    // view shows its first block.
    let x = s.lines().next().unwrap().find("2 Tree").unwrap() + 2;
    t.raw(&format!("\x1b[<0;{x};1M\x1b[<0;{x};1m"));
    let s = t.wait_for("┌Tree");
    let row = s.lines().position(|l| l.contains("┌Tree")).unwrap() + 2;
    t.raw(&format!("\x1b[<0;5;{row}M\x1b[<0;5;{row}m"));
    t.wait_for("▾ /");
    t.wait_for("Hex @ 0x4000");
    // The wheel over the hex view scrolls it (three rows), though the
    // tree has the focus.
    let s = t.screen();
    let hex_col = s.lines().nth(2).unwrap().chars().count() - 10;
    t.raw(&format!("\x1b[<65;{hex_col};10M"));
    t.wait_for("Hex @ 0x4030");
    // A click on the third row (etc) selects it; again, opens it.
    let etc = row + 2;
    for _ in 0..2 {
        t.raw(&format!("\x1b[<0;8;{etc}M\x1b[<0;8;{etc}m"));
    }
    t.wait_for("▾ etc");
    // The wheel up over the tree: three rows up, to the root; Enter
    // closes it.
    t.raw(&format!("\x1b[<64;5;{row}M"));
    t.keys(&["Enter"]);
    t.wait_for("▸ /");
    t.keys(&["q"]);
    t.wait_for("EXITED-0");
}

/// The issue's "done when" in a real terminal: a GPT qcow2 chain (BIOS
/// boot, an ESP, ext4 root, XFS data) opens straight into the root
/// filesystem; the user walks the tree to a file the overlay changed, sees
/// its bytes and the layer they come from, then picks the ESP in the
/// Volumes pane and sees its tree (as mdir lists it).
#[test]
fn a_gpt_chain_opens_into_its_root_and_the_volumes_pane_switches() {
    let tools = [
        "tmux",
        "sfdisk",
        "qemu-img",
        "qemu-io",
        "mke2fs",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "mdir",
        "mkfs.xfs",
        "truncate",
        "dd",
    ];
    if !tools.iter().all(|t| need(t)) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    crate::tui_volumes::build(dir);
    let bin = env!("CARGO_BIN_EXE_layerscope");
    let t = Tmux::start(
        dir,
        120,
        40,
        &format!("{bin} top.qcow2; echo EXITED-$?; sleep 60"),
    );
    // Straight into the root partition's ext4, no key pressed.
    t.wait_for("Tree (as of layer 1) · p3 ext4");
    // Walk: / open, etc open, hostname: its bytes as of the overlay.
    t.keys(&["2", "Enter", "Down", "Enter", "Down", "Enter"]);
    t.wait_for("nnn-host");
    // The bytes sit where debugfs puts the file's block, from the root
    // partition's start; the status bar names the overlay as their layer.
    let at = crate::tui_volumes::hostname_offset(dir);
    let row = format!("{:08x} ", at & !15);
    t.wait_until("the file's bytes from layer 1", |s| {
        s.contains("its blocks come from layer 1") && s.contains(&row)
    });
    // The Volumes pane: p2 (the ESP, vfat) chosen with Enter.
    t.keys(&["8"]);
    t.wait_for("p3 in view");
    t.keys(&["Down", "Down", "Enter"]);
    t.wait_for("p2 in view");
    // Back to the tree (the Volumes pane took its place), now the ESP's.
    t.keys(&["2"]);
    t.wait_for("· p2 vfat");
    t.keys(&["Enter"]);
    t.wait_for("▾ /");
    let mdir = sh(dir, &["mdir", "-b", "-i", "esp.raw", "::/"]);
    for name in String::from_utf8_lossy(&mdir.stdout)
        .lines()
        .map(|l| l.trim_start_matches("::/").trim_end_matches('/'))
        .filter(|n| !n.is_empty())
    {
        t.wait_until(name, |s| s.contains(name) && s.contains("· p2 vfat"));
    }
    t.keys(&["q"]);
    let s = t.wait_for("EXITED-0");
    assert!(
        !s.contains("Tree (as of"),
        "the UI is gone after quitting:\n{s}"
    );
    drop(t);
    // `--volume` opens straight into the volume named.
    let t = Tmux::start(
        dir,
        120,
        40,
        &format!("{bin} --volume p2 top.qcow2; echo EXITED-$?; sleep 60"),
    );
    t.wait_for("· p2 vfat");
    t.keys(&["q"]);
    t.wait_for("EXITED-0");
}
