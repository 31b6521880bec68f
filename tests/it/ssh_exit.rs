//! An `ssh://` command exits without waiting for ssh's goodbye to the
//! server; ssh, its stdin closed, ends the session by itself. Oracle:
//! sshd's per-connection processes, which live as long as the session.
use std::time::{Duration, Instant};

use crate::ssh::{fixture, ls_ssh, Sshd};

#[test]
fn ssh_ends_its_session_by_itself_after_a_command_exits() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let top = sshd.uri(&dir.join("top/top.qcow2"));
    for args in [&["info", top.as_str()][..], &["ls", "-R", top.as_str()]] {
        let r = ls_ssh(&sshd, dir, args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        // Waits for the state, however loaded the machine: the bound only
        // keeps a session that never ends from hanging the test.
        let since = Instant::now();
        while sshd.sessions() > 0 {
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "{args:?}: ssh's session still open a minute after layerscope exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
