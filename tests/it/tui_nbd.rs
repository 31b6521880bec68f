//! The TUI over NBD numbers the server's layers as it numbers a local
//! chain's: the demo chain served by `qemu-nbd -A` shows the same owner
//! map, legend and served map as the same files opened locally, frame
//! after frame; without `-A` the Status pane warns that the layers cannot
//! be told apart.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The demo chain's files.
fn demo_files(dir: &Path) {
    for name in ["base.qcow2", "update.qcow2", "top.qcow2"] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/demo")
            .join(name);
        std::fs::copy(src, dir.join(name)).unwrap();
    }
}

/// A qemu-nbd serving `top.qcow2`, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_nbd(dir: &Path, sock: &Path, depths: bool) -> Server {
    let mut args = vec!["--read-only", "--persistent", "--shared=8"];
    if depths {
        args.push("-A");
    }
    let child = Command::new("qemu-nbd")
        .args(&args)
        .args([
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            "top.qcow2",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "qemu-nbd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn render(dir: &Path, image: &str, keys: &str) -> String {
    layerscope(dir, &["render", image, "--size", "120x40", "--keys", keys])
        .ok()
        .text()
}

/// The Hit map pane of a 120x40 frame: its title and rows, the left
/// column only.
fn hit_map(frame: &str) -> Vec<String> {
    let lines: Vec<&str> = frame.lines().collect();
    let top = lines
        .iter()
        .position(|l| l.contains("┌Hit map"))
        .unwrap_or_else(|| panic!("no hit map in\n{frame}"));
    lines[top..]
        .iter()
        .take_while(|l| !l.starts_with('└'))
        .map(|l| l.split("││").next().unwrap_or(l).to_owned())
        .collect()
}

#[test]
fn owner_and_served_maps_over_qemu_nbd_a_equal_the_local_chain() {
    if !need("qemu-nbd") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    demo_files(dir);
    let sock = dir.join("a.sock");
    let _server = qemu_nbd(dir, &sock, true);
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    // The owner map: every cell and the legend.
    let local = hit_map(&render(dir, "top.qcow2", ""));
    let remote_frame = render(dir, &uri, "");
    let remote = hit_map(&remote_frame);
    assert_eq!(
        remote,
        local,
        "\n{}\n---\n{}",
        remote.join("\n"),
        local.join("\n")
    );
    let legend = local.join("\n");
    for layer in ["2:", "1:", "0:"] {
        assert!(legend.contains(layer), "{legend}");
    }
    assert!(
        remote_frame.contains("server chain: 3 layers"),
        "{remote_frame}"
    );
    // The same layer numbers frame after frame, whatever was read.
    for keys in [
        "PageDown PageDown",
        "g 0x400 Enter",
        "m m",
        "BackTab Enter Down Enter",
    ] {
        let again = hit_map(&render(dir, &uri, keys));
        assert_eq!(again.last(), remote.last(), "{keys}: {}", again.join("\n"));
    }
    // What the same reads were served from: equal too.
    let keys = "g 0x400 Enter PageDown BackTab Enter m";
    let local = hit_map(&render(dir, "top.qcow2", keys));
    let remote = hit_map(&render(dir, &uri, keys));
    assert!(local[0].contains("served so far"), "{}", local.join("\n"));
    assert_eq!(
        remote,
        local,
        "\n{}\n---\n{}",
        remote.join("\n"),
        local.join("\n")
    );
}

#[test]
fn qemu_nbd_without_a_shows_a_warning() {
    if !need("qemu-nbd") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    demo_files(dir);
    let sock = dir.join("plain.sock");
    let _server = qemu_nbd(dir, &sock, false);
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let frame = render(dir, &uri, "");
    assert!(frame.contains("⚠ no qemu:allocation-depth"), "{frame}");
    assert!(!frame.contains("server chain:"), "{frame}");
    // And `d` says why there is nothing to compare.
    let frame = render(dir, &uri, "d");
    assert!(frame.contains("an NBD export is one layer here"), "{frame}");
}
