//! How an `ssh://` command's connection ends. Oracle: sshd's
//! per-connection processes, which live as long as the connection.
//! - Not shared (`LAYERSCOPE_SSH_SHARE=0`): the command exits without
//!   waiting for ssh's goodbye to the server; ssh, its stdin closed, ends
//!   the session by itself.
//! - Shared (the default): the commands run on a host in a row use one
//!   connection (ssh's ControlMaster), which ends by itself once
//!   `LAYERSCOPE_SSH_SHARE` seconds pass with no command on it; a user's
//!   own ControlMaster/ControlPath configuration is left to work as they
//!   configured it.
use std::time::{Duration, Instant};

use crate::ssh::{fixture, ls_ssh_env, Sshd};

/// Waits (the bound only keeps a session that never ends from hanging
/// the test, however loaded the machine) until no connection is left.
fn until_no_connection(sshd: &Sshd, what: &str) {
    let since = Instant::now();
    while sshd.sessions() > 0 {
        assert!(
            since.elapsed() < Duration::from_secs(90),
            "{what}: ssh's connection still open 90 s later"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ssh_ends_its_session_by_itself_after_a_command_exits() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let top = sshd.uri(&dir.join("top/top.qcow2"));
    for args in [&["info", top.as_str()][..], &["ls", "-R", top.as_str()]] {
        let r = ls_ssh_env(&sshd, dir, args, &[("LAYERSCOPE_SSH_SHARE", "0")]);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        until_no_connection(&sshd, &format!("{args:?}"));
    }
}

#[test]
fn commands_in_a_row_share_one_connection_that_ends_by_itself() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let top = sshd.uri(&dir.join("top/top.qcow2"));
    // Long enough that a loaded machine runs the next command within it.
    let env = [("LAYERSCOPE_SSH_SHARE", "20")];
    let r = ls_ssh_env(&sshd, dir, &["info", &top], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let first = sshd.session_pids();
    assert_eq!(
        first.len(),
        1,
        "the connection is kept for the next command"
    );
    for args in [
        &["ls", "-R", top.as_str()][..],
        &["map", "--json", top.as_str()],
    ] {
        let r = ls_ssh_env(&sshd, dir, args, &env);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(
            sshd.session_pids(),
            first,
            "{args:?} made a connection of its own"
        );
    }
    until_no_connection(&sshd, "the shared connection");
    // Gone, and the next command makes a new one.
    let r = ls_ssh_env(&sshd, dir, &["info", &top], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let again = sshd.session_pids();
    assert_eq!(again.len(), 1);
    assert_ne!(again, first);
}

#[test]
fn a_users_own_control_master_is_left_as_configured() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let top = sshd.uri(&dir.join("top/top.qcow2"));
    // Their master, kept by nobody after the command (ControlPersist no):
    // had layerscope put its own options over theirs, the connection
    // would stay for LAYERSCOPE_SSH_SHARE's 600 s, past the wait's bound.
    let sockets = tempfile::tempdir().unwrap();
    let config = sshd.client_config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text
        .replace("ControlMaster no", "ControlMaster auto")
        .replace(
            "ControlPath none",
            &format!("ControlPath {}/%C", sockets.path().display()),
        );
    let theirs = config.with_file_name("ssh_config_theirs");
    std::fs::write(&theirs, text).unwrap();
    let command = format!("ssh -F {}", theirs.display());
    let r = ls_ssh_env(
        &sshd,
        dir,
        &["info", &top],
        &[
            ("LAYERSCOPE_SSH_COMMAND", &command),
            ("LAYERSCOPE_SSH_SHARE", "600"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    until_no_connection(&sshd, "their master, not persisted");
    assert!(
        std::fs::read_dir(sockets.path()).unwrap().next().is_none(),
        "their socket outlived their master"
    );
}
