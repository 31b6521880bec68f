//! Hostile input, one test per bug of issue 11: each builds its input in
//! the test, runs layerscope on it in a child process and asserts the
//! error or note, with a generous time bound only as a hang guard and the
//! child's peak memory (its `ru_maxrss`, from wait4) under [`MAX_RSS`].
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod block;
mod ext;
mod nbd;
mod terminal;

/// Peak resident memory allowed to any command on any hostile input.
pub const MAX_RSS_KIB: u64 = 256 << 10;
/// The hang guard: far above what any of these runs needs.
pub const HANG: Duration = Duration::from_secs(120);
/// Stdout kept for assertions; the rest is read and counted.
const KEEP: usize = 16 << 20;

/// What a bounded run gave.
pub struct Bounded {
    pub code: i32,
    /// The first [`KEEP`] bytes of stdout.
    pub stdout: Vec<u8>,
    /// How often `count` (see [`run`]) occurs in the whole stdout.
    pub count: u64,
    pub stderr: String,
    pub peak_kib: u64,
}

impl Bounded {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs layerscope with `args` in `cwd`, killing it after [`HANG`]
/// (which fails the test), and returns its output and peak memory.
/// `count` is a byte string whose occurrences in stdout are counted as it
/// streams (for outputs too large to keep).
pub fn run(cwd: &Path, args: &[&str], count: &[u8]) -> Bounded {
    run_env(cwd, args, count, &[])
}

/// [`run`] with extra environment variables.
///
/// The peak comes from GNU time (`%M`, its wait4 of the command): a child
/// spawned straight from this test process would report this process's
/// peak instead (Linux carries the old memory's high-water mark across
/// exec, and the test binary is large), while time's own child starts
/// from time's few pages.
pub fn run_env(cwd: &Path, args: &[&str], count: &[u8], env: &[(&str, &str)]) -> Bounded {
    use std::os::unix::process::CommandExt;
    assert!(Path::new(TIME).is_file(), "{TIME} (GNU time) is needed");
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(TIME)
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_layerscope"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("running layerscope");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let needle = count.to_vec();
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut hits = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        // Bytes of a possible match split between two reads.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if kept.len() < KEEP {
                let room = (KEEP - kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
            if !needle.is_empty() {
                carry.extend_from_slice(&buf[..n]);
                hits += carry
                    .windows(needle.len())
                    .filter(|w| *w == &needle[..])
                    .count() as u64;
                let keep_from = carry.len().saturating_sub(needle.len() - 1);
                carry.drain(..keep_from);
            }
        }
        (kept, hits)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = (&mut err).take(1 << 20).read_to_end(&mut s);
        std::io::copy(&mut err, &mut std::io::sink()).ok();
        String::from_utf8_lossy(&s).into_owned()
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > HANG {
            // The whole group: time and layerscope.
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!("layerscope {args:?} still running after {HANG:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, count) = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let said = std::fs::read_to_string(report.path()).unwrap_or_default();
    // The last line is %M; a line before it may say the command was killed.
    let peak_kib = said
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time said {said:?}"));
    let code = if said.contains("terminated by signal") {
        -1
    } else {
        status.code().unwrap_or(-1)
    };
    Bounded {
        code,
        stdout,
        count,
        stderr,
        peak_kib,
    }
}

/// GNU time, for a child's peak memory.
const TIME: &str = "/usr/bin/time";

/// Asserts a bounded run stayed under the memory limit and did not panic.
pub fn bounded(r: &Bounded, what: &str) {
    assert!(
        r.peak_kib < MAX_RSS_KIB,
        "{what}: peak memory {} KiB, limit {MAX_RSS_KIB} KiB",
        r.peak_kib
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{what} panicked: {}",
        r.stderr
    );
}

/// Asserts a bounded run failed with exit 1, one stderr line containing
/// every one of `words`.
pub fn fails_with(r: &Bounded, what: &str, words: &[&str]) {
    bounded(r, what);
    assert_eq!(r.code, 1, "{what}: expected exit 1; stderr: {}", r.stderr);
    let line = r.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{what}: stderr {:?}", r.stderr);
    for w in words {
        assert!(line.contains(w), "{what}: {line:?} does not say {w:?}");
    }
}

/// Big-endian reads and writes on an image in memory.
pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
