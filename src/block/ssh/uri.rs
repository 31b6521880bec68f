//! `ssh://[user@]host[:port]/path` as qemu's ssh driver spells it, and the
//! `ssh` command line that reaches the host: the user's own `ssh` (so
//! `~/.ssh/config`, the agent, known_hosts, ProxyJump and ControlMaster
//! apply) or `LAYERSCOPE_SSH_COMMAND`, run through the shell like git's
//! `GIT_SSH_COMMAND`.
use std::fmt;
use std::process::Command;

use super::share::{self, Sharing};
use crate::block::percent;

/// Where the images are: a host as `ssh` names it, and a path there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshUri {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The remote path as written after the authority (`/images/top.qcow2`);
    /// `/~/x` means `x` in the login directory.
    pub path: String,
}

/// The environment variable that replaces the `ssh` command line.
pub const SSH_COMMAND_ENV: &str = "LAYERSCOPE_SSH_COMMAND";

/// True when `text` is an `ssh://` URI (so it is not a local path).
pub fn is_ssh_uri(text: &str) -> bool {
    text.starts_with("ssh://")
}

impl SshUri {
    /// Parses a URI. The path is %-decoded; the host must not look like an
    /// `ssh` option.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<SshUri, String> {
        let bad = |why: &str| format!("{text:?}: {why}");
        let rest = text
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("not an ssh:// URI (ssh://[user@]host[:port]/path)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err(bad("no path: write ssh://host/path/to/image")),
        };
        if path.len() < 2 {
            return Err(bad("no path: write ssh://host/path/to/image"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("query and fragment parts are not supported"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(percent::decode(u).map_err(|e| bad(&e))?), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        // `ssh -oProxyCommand=…` as a "host" would run a command.
        if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err(bad("a host or user may not start with '-'"));
        }
        if host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("bad character in host"));
        }
        let port = match port {
            Some(p) => Some(p.parse().map_err(|_| bad("bad port"))?),
            None => None,
        };
        Ok(SshUri {
            user,
            host,
            port,
            path: percent::decode(path).map_err(|e| bad(&e))?,
        })
    }

    /// `ssh://[user@]host[:port]`, the prefix of every layer's name.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("ssh://{user}{host}{port}")
    }

    /// `[user@]host[:port]`, for the status pane.
    pub fn endpoint(&self) -> String {
        self.authority()
            .strip_prefix("ssh://")
            .unwrap_or_default()
            .to_owned()
    }

    /// The command that starts the SFTP subsystem on the host: `ssh` (or
    /// `custom`, normally `$LAYERSCOPE_SSH_COMMAND`, through `sh -c`, as git
    /// runs `GIT_SSH_COMMAND`; run directly, split at blanks, when it holds
    /// nothing the shell would read otherwise: see [`plain_words`]) with
    /// the options of OpenSSH's `sftp` client (no forwarding of X11, agent
    /// or ports, no local command), `-p`, `-l`, and `-s HOST sftp`.
    /// `batch` adds `BatchMode=yes`, for reconnections in the middle of a
    /// session, which must not prompt. `sharing` adds the options of a
    /// shared connection ([`super::share`]).
    pub fn command(&self, custom: Option<&str>, batch: bool, sharing: Option<&Sharing>) -> Command {
        let custom = custom.filter(|c| !c.trim().is_empty());
        let mut cmd = match (custom, custom.and_then(plain_words)) {
            (_, Some(words)) => {
                let mut words = words.into_iter();
                let mut direct = Command::new(words.next().unwrap_or("ssh"));
                direct.args(words);
                direct
            }
            (Some(c), None) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("{c} \"$@\"")).arg(c);
                sh
            }
            (None, None) => Command::new("ssh"),
        };
        for o in [
            "ForwardX11=no",
            "ForwardAgent=no",
            "PermitLocalCommand=no",
            "ClearAllForwardings=yes",
        ] {
            cmd.arg("-o").arg(o);
        }
        if batch {
            cmd.arg("-o").arg("BatchMode=yes");
        }
        if let Some(s) = sharing {
            cmd.args(s.options());
        }
        if let Some(p) = self.port {
            cmd.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &self.user {
            cmd.arg("-l").arg(u);
        }
        cmd.arg("-s").arg("--").arg(&self.host).arg("sftp");
        cmd
    }
}

impl SshUri {
    /// The connection sharing for the ssh command `custom` (normally
    /// `$LAYERSCOPE_SSH_COMMAND`; `None`: `ssh`) keeping the connection
    /// `persist` seconds: only for `ssh` run directly (see
    /// [`super::share`]).
    pub fn sharing(&self, custom: Option<&str>, persist: u32) -> Option<Sharing> {
        match custom.filter(|c| !c.trim().is_empty()) {
            None => share::sharing(self, None, persist),
            Some(c) => share::sharing(self, Some(&plain_words(c)?), persist),
        }
    }
}

impl fmt::Display for SshUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.authority(), self.path)
    }
}

/// The words of `command` when the shell would take it as plain words
/// and nothing else: only letters, digits, blanks and `_ . / : @ , + = -`
/// (no quotes, `$`, `~`, globs, redirections or comments), the first word
/// without `=` (which would be a variable assignment). Running such a
/// command directly spares starting `sh` (its search along `PATH` and its
/// start, a few ms before ssh's own).
fn plain_words(command: &str) -> Option<Vec<&str>> {
    let plain = command
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '\t' || "_./:@,+=-".contains(c));
    let words: Vec<&str> = command.split_ascii_whitespace().collect();
    let first = words.first()?;
    (plain && !first.contains('=')).then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_style_uris() {
        let u = SshUri::parse("ssh://alice@h.example:2222/srv/img/top.qcow2").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "h.example");
        assert_eq!(u.port, Some(2222));
        assert_eq!(u.path, "/srv/img/top.qcow2");
        assert_eq!(
            u.to_string(),
            "ssh://alice@h.example:2222/srv/img/top.qcow2"
        );
        let u = SshUri::parse("ssh://[::1]/a%20b").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", None));
        assert_eq!(u.path, "/a b");
        assert_eq!(u.authority(), "ssh://[::1]");
        assert!(SshUri::parse("ssh://host").is_err());
        assert!(SshUri::parse("ssh://host/").is_err());
        assert!(SshUri::parse("ssh://-oProxyCommand=x/y").is_err());
        assert!(SshUri::parse("ssh://h:99999/x").is_err());
        assert!(SshUri::parse("ssh:///x").is_err());
        assert!(is_ssh_uri("ssh://h/x"));
        assert!(!is_ssh_uri("./ssh:x"));
    }

    #[test]
    fn the_command_line_ends_with_the_subsystem() {
        let u = SshUri::parse("ssh://bob@h:2200/x").unwrap();
        let cmd = u.command(Some("ssh -F /dev/null"), true, None);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let tail: Vec<&str> = args
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(tail, ["-s", "--", "h", "sftp"]);
        assert!(args.windows(2).any(|w| w == ["-p", "2200"]));
        assert!(args.windows(2).any(|w| w == ["-l", "bob"]));
        assert!(args.iter().any(|a| a == "BatchMode=yes"));
        // Plain words: ssh run directly, its options first.
        assert_eq!(cmd.get_program(), "ssh");
        assert_eq!(args[..2], ["-F", "/dev/null"]);
        // What the shell reads otherwise (quotes, ~, $, an assignment)
        // goes through sh -c.
        for custom in [
            "ssh -o 'ProxyCommand nc %h %p'",
            "ssh -F ~/cfg",
            "ssh -F $HOME/cfg",
            "FOO=1 ssh",
            "ssh -v # debug",
        ] {
            let cmd = u.command(Some(custom), false, None);
            assert_eq!(cmd.get_program(), "sh", "{custom}");
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(args[..2], ["-c".to_owned(), format!("{custom} \"$@\"")]);
        }
        assert_eq!(
            plain_words(" ssh  -F /x/y.conf -o BatchMode=yes "),
            Some(vec!["ssh", "-F", "/x/y.conf", "-o", "BatchMode=yes"])
        );
    }
}
