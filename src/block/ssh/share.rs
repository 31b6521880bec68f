//! One ssh connection shared by the commands run on a host in a row:
//! OpenSSH's ControlMaster, kept open a while after layerscope exits
//! (ControlPersist), as Ansible does by default. ssh's own set-up (key
//! exchange, authentication) costs several times what a command does over
//! it: `info` of a qcow2 chain on 127.0.0.1 took ~350 ms with a new
//! connection and ~50 ms over a shared one; a script calling layerscope
//! in a loop pays it once.
//!
//! The user's configuration wins. Sharing is added only to the plain
//! `ssh` command (the default, or `LAYERSCOPE_SSH_COMMAND` naming `ssh`
//! with options, run directly), and only when `ssh -G` says the user's
//! configuration for that host sets neither ControlMaster nor a
//! ControlPath: a user with their own master keeps using it.
//! `LAYERSCOPE_SSH_SHARE=0` turns sharing off; `LAYERSCOPE_SSH_SHARE=N`
//! keeps the connection N seconds after the last command (default 60).
//! Reconnections in the middle of a session never go through a shared
//! master: the link broke, so the master's connection may be the broken
//! one.
//!
//! The sockets live in a directory only the user can enter
//! (`$XDG_RUNTIME_DIR/layerscope-ssh`, else `/tmp/layerscope-ssh-UID`),
//! made with mode 0700; one that is a symlink, not the user's, or open to
//! others is not used.
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::uri::SshUri;

/// The environment variable that sets (or turns off) sharing.
pub const SHARE_ENV: &str = "LAYERSCOPE_SSH_SHARE";

/// Seconds a shared connection stays open after the last command.
pub const DEFAULT_PERSIST: u32 = 60;

/// How long `ssh -G` may take (it reads configuration files only).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest socket directory: a Unix socket's path holds at most 107
/// bytes, and ssh adds `/` and the 40 hex digits of `%C`, then a
/// 17-byte temporary suffix while it makes the socket.
const MAX_DIR_LEN: usize = 107 - 1 - 40 - 17;

/// The ssh options that share the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharing {
    /// The socket directory.
    pub dir: PathBuf,
    /// Seconds the master stays after the last command.
    pub persist: u32,
}

impl Sharing {
    /// `-o ControlMaster=auto -o ControlPath=DIR/%C -o ControlPersist=Ns`.
    pub fn options(&self) -> Vec<String> {
        vec![
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            format!("ControlPath={}/%C", self.dir.display()),
            "-o".into(),
            format!("ControlPersist={}s", self.persist),
        ]
    }
}

/// Seconds to keep a shared connection, from `$LAYERSCOPE_SSH_SHARE`
/// (unset: [`DEFAULT_PERSIST`]; `0`, `off`, `no` or anything else that is
/// not a number: 0, no sharing).
pub fn persist_from_env() -> u32 {
    match std::env::var(SHARE_ENV) {
        Err(_) => DEFAULT_PERSIST,
        Ok(v) => v.trim().parse().unwrap_or(0),
    }
}

/// The sharing to use for `uri` with the ssh command `words` (the plain
/// words of `LAYERSCOPE_SSH_COMMAND`, or none for `ssh`), decided once
/// per host and command in a process (the probe is a process start).
pub fn sharing(uri: &SshUri, words: Option<&[&str]>, persist: u32) -> Option<Sharing> {
    if persist == 0 {
        return None;
    }
    let words: Vec<String> = match words {
        None => vec!["ssh".into()],
        Some(w) => w.iter().map(|s| (*s).to_owned()).collect(),
    };
    // Only OpenSSH's client is known to take these options and `-G`.
    let program = words.first()?;
    if Path::new(program).file_name()? != "ssh" {
        return None;
    }
    static DECIDED: OnceLock<Mutex<HashMap<String, Option<PathBuf>>>> = OnceLock::new();
    let key = format!("{words:?} {}", uri.authority());
    let decided = DECIDED.get_or_init(Mutex::default);
    let known = decided.lock().ok().and_then(|m| m.get(&key).cloned());
    let dir = match known {
        Some(dir) => dir,
        None => {
            let dir = user_has_none(uri, &words).then(socket_dir).flatten();
            if let Ok(mut m) = decided.lock() {
                m.insert(key, dir.clone());
            }
            dir
        }
    };
    dir.map(|dir| Sharing { dir, persist })
}

/// True when `ssh -G` (the configuration ssh would use for the host)
/// shows no ControlMaster and no ControlPath of the user's.
fn user_has_none(uri: &SshUri, words: &[String]) -> bool {
    let Some((program, options)) = words.split_first() else {
        return false;
    };
    let mut cmd = Command::new(program);
    cmd.args(options).arg("-G");
    if let Some(p) = uri.port {
        cmd.arg("-p").arg(p.to_string());
    }
    if let Some(u) = &uri.user {
        cmd.arg("-l").arg(u);
    }
    cmd.arg("--").arg(&uri.host);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let mut out = Vec::new();
    // `-G` prints a few KiB and exits; a command that does not is killed
    // at the deadline (a reader thread would outlive it otherwise).
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.by_ref().take(1 << 20).read_to_end(&mut out);
                }
                if !status.success() {
                    return false;
                }
                break;
            }
            Ok(None) if start.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
    no_control_of_their_own(&String::from_utf8_lossy(&out))
}

/// `ssh -G` output with ControlMaster off and no ControlPath.
fn no_control_of_their_own(config: &str) -> bool {
    let mut master = None;
    let mut path = None;
    for line in config.lines() {
        let mut kv = line.splitn(2, ' ');
        match (kv.next(), kv.next()) {
            (Some("controlmaster"), Some(v)) => master = Some(v.trim().to_owned()),
            (Some("controlpath"), Some(v)) => path = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    matches!(master.as_deref(), Some("false" | "no")) && path.as_deref().is_none_or(|p| p == "none")
}

/// The socket directory, made if missing; `None` when it is not a
/// directory of the user's own that only they can enter, or too long for
/// a socket path.
fn socket_dir() -> Option<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_absolute()) {
        Some(d) => PathBuf::from(d).join("layerscope-ssh"),
        None => std::env::temp_dir().join(format!("layerscope-ssh-{uid}")),
    };
    if dir.as_os_str().len() > MAX_DIR_LEN {
        return None;
    }
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let private = meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0;
    private.then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_own_control_settings_win() {
        let default = "user bob\nhostname h\ncontrolmaster false\ncontrolpersist no\n";
        assert!(no_control_of_their_own(default));
        assert!(no_control_of_their_own(
            "controlmaster no\ncontrolpath none\n"
        ));
        assert!(!no_control_of_their_own(
            "controlmaster auto\ncontrolpath /home/bob/.ssh/cm-%C\n"
        ));
        // A path of theirs without a master of theirs: their master (made
        // by another ssh) is used as they configured it.
        assert!(!no_control_of_their_own(
            "controlmaster false\ncontrolpath /run/cm\n"
        ));
        // Not ssh -G's output at all.
        assert!(!no_control_of_their_own("garbage"));
    }

    #[test]
    fn only_plain_ssh_is_probed() {
        let u = SshUri::parse("ssh://h/x").unwrap();
        assert_eq!(sharing(&u, Some(&["./my-wrapper", "-x"]), 60), None);
        assert_eq!(sharing(&u, None, 0), None);
    }

    #[test]
    fn the_options_name_a_socket_per_connection() {
        let s = Sharing {
            dir: PathBuf::from("/run/user/1/layerscope-ssh"),
            persist: 60,
        };
        assert_eq!(
            s.options(),
            [
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPath=/run/user/1/layerscope-ssh/%C",
                "-o",
                "ControlPersist=60s"
            ]
        );
    }
}
