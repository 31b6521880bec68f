//! `ssh://` chains against a real OpenSSH server started by the test: a
//! throwaway sshd on 127.0.0.1 and a high port, with a host key and a user
//! key made here, reached through `LAYERSCOPE_SSH_COMMAND="ssh -F CONFIG"`.
//! Oracle: the same commands on the local files.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use layerscope::block::chain::ChainOptions;
use layerscope::block::layered::LayeredReader;
use layerscope::block::ssh::{self, Options};
use layerscope::block::BlockSource;
use serde_json::Value;

use crate::util::*;

/// A running sshd, killed (with its sessions) when dropped.
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// `ssh -F CONFIG` for LAYERSCOPE_SSH_COMMAND.
    pub command: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Starts sshd, or `None` (skip) when OpenSSH is not installed.
    pub fn start() -> Option<Sshd> {
        if !need("sshd") || !need("ssh") || !need("ssh-keygen") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        for key in ["host", "user"] {
            sh(
                d,
                &["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key],
            );
        }
        std::fs::copy(d.join("user.pub"), d.join("authorized_keys")).unwrap();
        // sshd started by root needs its privilege separation directory
        // (made by the Debian package's service, which does not run here).
        if rustix_is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let sshd = which("sshd");
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                d.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPidFile none\nStrictModes no\n\
                     UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
                     LogLevel ERROR\n",
                    d = d.display()
                ),
            )
            .unwrap();
            std::fs::write(
                d.join("known_hosts"),
                format!(
                    "[127.0.0.1]:{port} {}",
                    std::fs::read_to_string(d.join("host.pub")).unwrap()
                ),
            )
            .unwrap();
            std::fs::write(
                d.join("ssh_config"),
                format!(
                    "Host *\n  IdentityFile {d}/user\n  IdentitiesOnly yes\n  \
                     UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n  \
                     BatchMode yes\n  ControlMaster no\n  ControlPath none\n",
                    d = d.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", sshd.display()));
            let command = format!("ssh -F {}", d.join("ssh_config").display());
            let start = Instant::now();
            let mut exited = false;
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                let ok = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{command} -p {port} 127.0.0.1 true"))
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    return Some(Sshd {
                        child,
                        port,
                        command,
                        _dir: dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            // Exited at once: most likely the port was taken meanwhile.
            assert!(exited, "sshd on port {port} did not answer: {log}");
            eprintln!("sshd on port {port} exited: {log}");
        }
        panic!("sshd did not start on five ports");
    }

    /// `ssh://127.0.0.1:PORT` + `path`.
    pub fn uri(&self, path: &Path) -> String {
        format!("ssh://127.0.0.1:{}{}", self.port, path.display())
    }

    /// The per-connection sshd processes (children of ours) alive.
    pub fn sessions(&self) -> usize {
        self.session_pids().len()
    }

    /// Their process ids, sorted: one per TCP connection, the same for as
    /// long as the connection lives.
    pub fn session_pids(&self) -> Vec<u32> {
        let mut pids = children_of(self.child.id());
        pids.sort_unstable();
        pids
    }

    /// The ssh client configuration file (`-F`) of [`Sshd::command`].
    pub fn client_config(&self) -> PathBuf {
        self._dir.path().join("ssh_config")
    }

    /// Kills the per-connection sshd processes (children of ours): every
    /// client loses its connection, the listener stays.
    pub fn kill_sessions(&self) -> usize {
        let me = self.child.id();
        let mut n = 0;
        for pid in children_of(me) {
            for grand in children_of(pid) {
                let _ = Command::new("kill")
                    .arg("-9")
                    .arg(grand.to_string())
                    .status();
            }
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            n += 1;
        }
        n
    }
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `tool` on PATH, or in /usr/sbin (sshd's home, not always on PATH).
fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin").join(tool))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Process ids whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Runs layerscope with LAYERSCOPE_SSH_COMMAND set.
pub(crate) fn ls_ssh(sshd: &Sshd, cwd: &Path, args: &[&str]) -> Run {
    ls_ssh_env(sshd, cwd, args, &[])
}

/// [`ls_ssh`] with more environment variables.
pub(crate) fn ls_ssh_env(sshd: &Sshd, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(args)
        .current_dir(cwd)
        .env("LAYERSCOPE_SSH_COMMAND", &sshd.command)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running layerscope");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The test chain, built once: `base/base.raw` (ext4, every byte
/// allocated: SFTP cannot see holes, see below), `top/mid.qcow2` over
/// `../base/base.raw` (a relative backing file in another directory, raw,
/// with compressed clusters) and `top/top.qcow2` over `mid.qcow2`; each
/// overlay adds, changes and deletes files.
pub(crate) fn fixture() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if !need("qemu-img") || !need("mke2fs") || !need("debugfs") {
            return None;
        }
        let dir = process_dir("layerscope-ssh-fixture");
        let d = dir.as_path();
        std::fs::create_dir_all(d.join("base")).unwrap();
        std::fs::create_dir_all(d.join("top")).unwrap();
        mkfs(d, "sparse", "24M", 120);
        // A raw file over SFTP reads as all data (SFTP v3 cannot ask where
        // holes are, like qemu's ssh driver): with every byte allocated the
        // local map says the same, so the two can be compared.
        sh(
            d,
            &[
                "qemu-img",
                "convert",
                "-S",
                "0",
                "-f",
                "raw",
                "-O",
                "raw",
                "sparse.raw",
                "base/base.raw",
            ],
        );
        std::fs::copy(d.join("sparse.raw"), d.join("flat1.raw")).unwrap();
        std::fs::write(d.join("note.txt"), "written in the middle layer\n").unwrap();
        debugfs_w(
            d,
            "flat1.raw",
            &format!(
                "write {} /note.txt\nrm /d0/s0/f0.bin\nmkdir /mid\n",
                d.join("note.txt").display()
            ),
        );
        thin_overlay_io(
            d,
            "top/mid.qcow2",
            "../base/base.raw",
            "raw",
            &d.join("flat1.raw"),
            "",
            Writes {
                compress: true,
                zeros: false,
            },
        );
        std::fs::copy(d.join("flat1.raw"), d.join("flat2.raw")).unwrap();
        std::fs::write(d.join("top.txt"), "the top layer\n".repeat(900)).unwrap();
        debugfs_w(
            d,
            "flat2.raw",
            &format!(
                "write {} /mid/top.txt\nrm /hello.txt\n",
                d.join("top.txt").display()
            ),
        );
        thin_overlay_io(
            d,
            "top/top.qcow2",
            "mid.qcow2",
            "qcow2",
            &d.join("flat2.raw"),
            "",
            Writes::default(),
        );
        Some(dir)
    })
    .as_ref()
    .map(|t| t.as_path())
}

/// Replaces the remote names by the local ones and drops what SFTP cannot
/// know (a file's allocated size).
fn localize(text: &str, prefix: &str) -> String {
    text.replace(prefix, "")
}

fn without_actual_size(mut v: Value) -> Value {
    if let Some(a) = v.as_array_mut() {
        for layer in a {
            if let Some(o) = layer.as_object_mut() {
                o.remove("actual-size");
                // qemu's shape: the file node's st_blocks, which SFTP
                // does not give.
                for child in o
                    .get_mut("children")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(info) = child.get_mut("info").and_then(Value::as_object_mut) {
                        info.remove("actual-size");
                    }
                }
            }
        }
    }
    v
}

#[test]
fn every_command_on_an_ssh_chain_equals_the_local_answer() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.uri(&dir.join("top/top.qcow2"));
    let prefix = format!("{}/", sshd.uri(dir));
    let local = "top/top.qcow2";

    // The chain: names resolved on the host the way qemu resolves them.
    let r = ls_ssh(&sshd, dir, &["chain", "--json", &remote]).ok();
    let l = layerscope(dir, &["chain", "--json", local]).ok();
    let rj: Value = serde_json::from_str(&localize(&r.text(), &prefix)).unwrap();
    assert_eq!(without_actual_size(rj), without_actual_size(l.json()));
    assert!(r.text().contains(&format!("{prefix}top/../base/base.raw")));

    for args in [
        vec!["map", "--json"],
        vec!["map"],
        vec!["info"],
        vec!["groups", "--json"],
        vec!["ls", "-R", "-l", "/"],
        vec!["ls", "--json", "/mid"],
        vec!["stat", "--json", "/mid/top.txt"],
        vec!["cat", "/mid/top.txt"],
        vec!["cat", "/note.txt", "--layer", "1"],
        vec!["cat", "/d3/s0/f3.bin"],
        vec!["blocks", "/d4/s1/f4.bin"],
        vec!["diff", "--json"],
        vec!["diff", "--from", "0", "--to", "2"],
        vec!["diff", "--full", "--json"],
        vec!["blame", "-R", "/"],
        vec!["read", "--offset", "0x100000", "--length", "3M"],
    ] {
        let mut ra = args.clone();
        ra.insert(1, &remote);
        let mut la = args.clone();
        la.insert(1, local);
        let r = ls_ssh(&sshd, dir, &ra).ok();
        let l = layerscope(dir, &la).ok();
        assert!(!l.stdout.is_empty(), "{args:?}: empty local answer");
        // Column widths follow the longest layer name: compare words.
        let words = |t: &str| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            words(&localize(&r.text(), &prefix)),
            words(&l.text()),
            "{args:?} over ssh differs from the local answer"
        );
    }
    // The whole disk, byte for byte, and qemu's flattening of the chain.
    let r = ls_ssh(&sshd, dir, &["read", &remote]).ok();
    sh(
        dir,
        &["qemu-img", "convert", "-O", "raw", local, "flat-top.raw"],
    );
    assert!(r.stdout == std::fs::read(dir.join("flat-top.raw")).unwrap());
}

#[test]
fn a_missing_remote_file_names_the_remote_path() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let missing = sshd.uri(&dir.join("top/nothing.qcow2"));
    let r = ls_ssh(&sshd, dir, &["chain", &missing]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&missing) && r.stderr.contains("no such file"),
        "{}",
        r.stderr
    );
    // A backing file missing on the host: the overlay, the name written in
    // it and the remote path tried.
    let d = tempfile::tempdir_in(dir).unwrap();
    sh(
        d.path(),
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "gone/base.qcow2",
            "-F",
            "qcow2",
            "o.qcow2",
            "16M",
        ],
    );
    let top = sshd.uri(&d.path().join("o.qcow2"));
    let r = ls_ssh(&sshd, dir, &["map", &top]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let tried = sshd.uri(&d.path().join("gone/base.qcow2"));
    assert!(
        r.stderr.contains(&tried) && r.stderr.contains("\"gone/base.qcow2\""),
        "{}",
        r.stderr
    );
    // A directory is not an image.
    let r = ls_ssh(&sshd, dir, &["chain", &sshd.uri(&dir.join("top"))]);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
}

#[test]
fn a_dropped_connection_is_reported_and_reconnected() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let opts = Options {
        ssh_command: Some(sshd.command.clone()),
        ..Options::default()
    };
    let chain = ssh::open_ssh_chain(
        &sshd.uri(&dir.join("top/top.qcow2")),
        ChainOptions::default(),
        opts,
    )
    .unwrap();
    let session = ssh::session_of(&chain).expect("an ssh session");
    let reader = LayeredReader::new(&chain).unwrap();
    let size = reader.len();
    let mut first = vec![0u8; 1 << 20];
    reader.read_at(0, &mut first).unwrap();
    assert_eq!(session.status().stats.reconnects, 0);
    assert!(sshd.kill_sessions() >= 1, "no ssh session to kill");
    // Bytes not read before: they must come over a new connection.
    let mut rest = vec![0u8; 4 << 20];
    reader.read_at(size - (4 << 20), &mut rest).unwrap();
    let st = session.status();
    assert_eq!(st.stats.reconnects, 1, "{st:?}");
    assert!(st.stats.errors >= 1, "{st:?}");
    assert!(st.stats.last_error.is_some(), "{st:?}");
    assert_eq!(
        serde_json::to_value(&st).unwrap()["state"],
        "ready",
        "{st:?}"
    );
    let flat = dir.join("flat-dropped.raw");
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "raw",
            "top/top.qcow2",
            flat.to_str().unwrap(),
        ],
    );
    let want = std::fs::read(&flat).unwrap();
    assert!(first[..] == want[..1 << 20]);
    assert!(rest[..] == want[want.len() - (4 << 20)..]);
}

#[test]
fn ssh_that_never_answers_or_speaks_garbage_gives_clear_errors() {
    // No sshd needed: the "ssh command" is a stand-in.
    let opts = |cmd: &str| Options {
        ssh_command: Some(cmd.to_owned()),
        connect_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let t = Instant::now();
    let err = ssh::open_ssh_chain(
        "ssh://h/x.qcow2",
        ChainOptions::default(),
        opts("sleep 30 #"),
    )
    .err()
    .expect("a silent ssh must fail");
    assert!(t.elapsed() < Duration::from_secs(60), "hung");
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains("no SFTP answer within"), "{text}");

    let err = ssh::open_ssh_chain(
        "ssh://h/x.qcow2",
        ChainOptions::default(),
        opts("printf 'garbage and more' #"),
    )
    .err()
    .expect("garbage must fail");
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains("SFTP packet of"), "{text}");

    let err = ssh::open_ssh_chain(
        "ssh://h/x.qcow2",
        ChainOptions::default(),
        opts("echo 'ssh: Could not resolve hostname h' >&2; exit 255 #"),
    )
    .err()
    .expect("a failing ssh must fail");
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(
        text.contains("ssh exited") && text.contains("Could not resolve hostname h"),
        "{text}"
    );
}

/// The TUI over ssh: the Status pane names the session (state, host, the
/// transport) with its counters, and the tree of the filesystem is the
/// local render's.
#[test]
fn the_tui_status_pane_shows_the_ssh_session() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.uri(&dir.join("top/top.qcow2"));
    let render = |image: &str, size: &str| {
        ls_ssh(
            &sshd,
            dir,
            &["render", image, "--size", size, "--keys", "2 Enter"],
        )
        .ok()
        .text()
    };
    let frame = render(&remote, "200x60");
    let host = remote
        .trim_start_matches("ssh://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        frame.contains(&format!("Ready  ssh://{host}")),
        "{host} in\n{frame}"
    );
    assert!(frame.contains("transport ssh + SFTP v3"), "{frame}");
    // Requests were made (the superblock, the root directory) and none
    // failed.
    let line = frame
        .lines()
        .find(|l| l.contains(" requests, "))
        .unwrap_or_else(|| panic!("no requests line in\n{frame}"));
    let requests: u64 = line
        .split(" requests,")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(requests > 0, "{line}");
    assert!(frame.contains("errors 0  reconnects 0"), "{frame}");
    // The tree is the local one's.
    let tree = |f: &str| crate::tui_volumes::tree_names(&crate::tui_volumes::pane(f, "Tree"));
    let local = render("top/top.qcow2", "200x60");
    assert_eq!(tree(&frame), tree(&local));
    assert!(tree(&local).len() > 3, "{local}");
    // At 80x24 the Status pane is a tab (7).
    let small = ls_ssh(
        &sshd,
        dir,
        &["render", &remote, "--size", "80x24", "--keys", "7"],
    )
    .ok()
    .text();
    // The pane's rows, the session's varying parts replaced: the port,
    // the temporary directory, the counters and times, the read size
    // the server allows.
    let filtered = crate::tui_volumes::pane(&small, "Status")
        .iter()
        .map(|l| {
            let l = l
                .replace(&sshd.uri(dir), "ssh://HOST/DIR")
                .replace(&host, "HOST");
            if l.contains("requests,") || l.contains("latency") {
                "(counters)".to_owned()
            } else if let Some((head, _)) = l.split_once("reads of ") {
                format!("{head}reads of (size)")
            } else {
                l.trim_end().to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("ssh_status_80x24", filtered);
}
