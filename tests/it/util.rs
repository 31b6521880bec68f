//! Shared test helpers: finding tools (a missing tool fails under CI),
//! running layerscope, building images and asking the oracles.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// True when `tool` is on PATH. When it is missing: under CI (`CI=true`)
/// the test fails; elsewhere it is skipped with a message.
pub fn need(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is not installed, and CI=true: tests must not skip (see .ci/run)");
        }
        eprintln!("SKIP: {tool} is not installed");
    }
    found
}

/// The corpus of third-party test images (`LAYERSCOPE_CORPUS`), with the
/// same rule as [`need`].
pub fn corpus() -> Option<PathBuf> {
    match std::env::var_os("LAYERSCOPE_CORPUS") {
        Some(p) if Path::new(&p).is_dir() => Some(PathBuf::from(p)),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("LAYERSCOPE_CORPUS is not set to a directory, and CI=true");
            }
            eprintln!("SKIP: LAYERSCOPE_CORPUS is not set");
            None
        }
    }
}

/// The result of running layerscope.
pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}\nstderr: {}", self.text(), self.stderr))
    }

    /// Asserts success and returns self.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "layerscope failed: {}", self.stderr);
        self
    }
}

thread_local! {
    /// Arguments [`with_args`] adds to every [`layerscope`] run on this
    /// thread.
    static EXTRA: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `extra` appended to every `layerscope` command it runs
/// (on this thread): the same checks, another way of opening (such as
/// `--no-replay`).
pub fn with_args<T>(extra: &[&str], f: impl FnOnce() -> T) -> T {
    let before = EXTRA.with(|e| e.replace(extra.iter().map(|s| s.to_string()).collect()));
    let out = f();
    EXTRA.with(|e| e.replace(before));
    out
}

/// Runs layerscope with `args` in `cwd`.
pub fn layerscope(cwd: &Path, args: &[&str]) -> Run {
    layerscope_env(cwd, args, &[])
}

/// [`layerscope`] with environment variables set.
pub fn layerscope_env(cwd: &Path, args: &[&str], vars: &[(&str, &Path)]) -> Run {
    let extra = EXTRA.with(|e| e.borrow().clone());
    let out = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(args)
        .args(&extra)
        .envs(vars.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("running layerscope");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a tool in `cwd` and asserts it succeeded.
pub fn sh(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `qemu-img map --output=json IMAGE`, parsed.
pub fn qemu_map(cwd: &Path, image: &str) -> Value {
    serde_json::from_slice(&sh(cwd, &["qemu-img", "map", "--output=json", image]).stdout).unwrap()
}

/// `qemu-img info --backing-chain --output=json IMAGE`, parsed.
pub fn qemu_info_chain(cwd: &Path, image: &str) -> Value {
    serde_json::from_slice(
        &sh(
            cwd,
            &[
                "qemu-img",
                "info",
                "--backing-chain",
                "--output=json",
                image,
            ],
        )
        .stdout,
    )
    .unwrap()
}

/// `qemu-img convert -O raw [EXTRA…] IMAGE`, as bytes (the flat disk
/// qemu reads).
pub fn qemu_raw(cwd: &Path, image: &str, extra: &[&str]) -> Vec<u8> {
    let out = cwd.join(format!("{}.qemu-raw", image.replace('/', "_")));
    let mut args = vec!["qemu-img", "convert", "-O", "raw"];
    args.extend_from_slice(extra);
    args.extend([image, out.to_str().unwrap()]);
    sh(cwd, &args);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// `qemu-io -f FMT -c CMD… IMAGE`.
pub fn qemu_io(cwd: &Path, image: &str, cmds: &[&str]) {
    let mut args = vec!["qemu-io", "-f", "qcow2"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(image);
    let out = sh(cwd, &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("error") && !text.contains("failed"),
        "qemu-io {cmds:?}: {text}"
    );
}

/// A directory tree for `mke2fs -d`: `files` files of various sizes in a
/// few directories, deterministic content.
pub fn make_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 7)).join(format!("s{}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let size = [0usize, 100, 4096, 5000, 70_000, 300_000][i % 6];
        let body: Vec<u8> = (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        std::fs::write(dir.join(format!("f{i}.bin")), body).unwrap();
    }
    std::fs::write(root.join("hello.txt"), b"hello from the base layer\n").unwrap();
}

/// Makes `NAME.raw` (ext4 of `size`, from a generated tree) in `dir`.
pub fn mkfs(dir: &Path, name: &str, size: &str, files: usize) {
    let tree = dir.join(format!("{name}.tree"));
    make_tree(&tree, files);
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-E",
            "root_owner=0:0",
            "-d",
            tree.to_str().unwrap(),
            &format!("{name}.raw"),
            size,
        ],
    );
    std::fs::remove_dir_all(tree).unwrap();
}

/// Applies debugfs commands (one per line) to a raw image, writing.
pub fn debugfs_w(dir: &Path, image: &str, commands: &str) {
    let script = dir.join(format!("{image}.debugfs"));
    std::fs::write(&script, commands).unwrap();
    sh(
        dir,
        &["debugfs", "-w", "-f", script.to_str().unwrap(), image],
    );
}

/// A thin overlay: OVERLAY (in `dir`) over BACKING (a path as written in
/// the header, relative to the overlay's directory) holding exactly the
/// clusters where FLAT differs from BACKING, made with `qemu-img rebase`
/// (safe mode) from an overlay over FLAT. `create_opts` go to
/// `qemu-img create -o`; `compress` writes compressed clusters.
pub fn thin_overlay(
    dir: &Path,
    overlay: &str,
    backing: &str,
    backing_fmt: &str,
    flat: &Path,
    create_opts: &str,
    compress: bool,
) {
    let flat = flat.canonicalize().unwrap();
    let mut args = vec![
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        flat.to_str().unwrap(),
        "-F",
        "raw",
    ];
    if !create_opts.is_empty() {
        args.push("-o");
        args.push(create_opts);
    }
    args.push(overlay);
    sh(dir, &args);
    let overlay_dir = dir.join(overlay).parent().unwrap().to_path_buf();
    let file = Path::new(overlay)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut args = vec!["qemu-img", "rebase", "-q", "-b", backing, "-F", backing_fmt];
    if compress {
        args.push("-c");
    }
    args.push(&file);
    sh(&overlay_dir, &args);
}

/// How [`thin_overlay_io`] writes the clusters that differ.
#[derive(Clone, Copy, Default)]
pub struct Writes {
    /// `write -c`: compressed clusters (the overlay's compression type).
    pub compress: bool,
    /// Clusters that became all zeros are written with `write -z` (a qcow2
    /// zero cluster) instead of as data.
    pub zeros: bool,
}

/// A thin overlay built cluster by cluster, the way the demo's generator
/// does it: OVERLAY (a path in `dir`) is created over BACKING (as written in
/// the header, relative to the overlay's directory); the old contents (qemu's
/// flattening of BACKING) and FLAT are compared per cluster, and only the
/// clusters that differ are written, all in one `qemu-io` run (`write -s`
/// from a file per cluster, `-c` or `-z` as `writes` says). Returns the
/// number of clusters written.
pub fn thin_overlay_io(
    dir: &Path,
    overlay: &str,
    backing: &str,
    backing_fmt: &str,
    flat: &Path,
    create_opts: &str,
    writes: Writes,
) -> usize {
    let flat = flat.canonicalize().unwrap();
    let overlay_dir = dir.join(overlay).parent().unwrap().to_path_buf();
    let file = Path::new(overlay)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut args = vec![
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        backing_fmt,
    ];
    if !create_opts.is_empty() {
        args.extend(["-o", create_opts]);
    }
    args.push(&file);
    sh(&overlay_dir, &args);
    let info: Value = serde_json::from_slice(
        &sh(&overlay_dir, &["qemu-img", "info", "--output=json", &file]).stdout,
    )
    .unwrap();
    let cluster = info["cluster-size"].as_u64().unwrap() as usize;
    let work = tempfile::tempdir_in(&overlay_dir).unwrap();
    let old_flat = work.path().join("old.raw");
    sh(
        &overlay_dir,
        &[
            "qemu-img",
            "convert",
            "-f",
            backing_fmt,
            "-O",
            "raw",
            backing,
            old_flat.to_str().unwrap(),
        ],
    );
    let old = std::fs::read(&old_flat).unwrap();
    let new = std::fs::read(&flat).unwrap();
    assert_eq!(old.len(), new.len(), "{overlay}: FLAT and BACKING sizes");
    let mut cmds = Vec::new();
    for (i, (o, n)) in old.chunks(cluster).zip(new.chunks(cluster)).enumerate() {
        if o == n {
            continue;
        }
        let (off, len) = (i * cluster, n.len());
        if writes.zeros && n.iter().all(|&b| b == 0) {
            cmds.push(format!("write -q -z {off} {len}"));
            continue;
        }
        let piece = work.path().join(format!("c{i}"));
        std::fs::write(&piece, n).unwrap();
        let c = if writes.compress { "-c " } else { "" };
        cmds.push(format!("write -q {c}-s {} {off} {len}", piece.display()));
    }
    if !cmds.is_empty() {
        let mut args = vec!["qemu-io", "-f", "qcow2"];
        for c in &cmds {
            args.extend(["-c", c.as_str()]);
        }
        args.push(&file);
        let out = sh(&overlay_dir, &args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.trim().is_empty(), "qemu-io on {overlay}: {said}");
    }
    cmds.len()
}

/// sha256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// Bytes of IMAGE at `[off, off+len)` as `qemu-io -c "read -v"` dumps them.
pub fn qemu_io_read(cwd: &Path, image: &str, off: u64, len: u64) -> Vec<u8> {
    let out = sh(
        cwd,
        &[
            "qemu-io",
            "-f",
            "qcow2",
            "-r",
            "-c",
            &format!("read -v {off} {len}"),
            image,
        ],
    );
    let mut bytes = Vec::with_capacity(len as usize);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((addr, rest)) = line.split_once(":  ") else {
            continue;
        };
        if u64::from_str_radix(addr.trim(), 16).is_err() {
            continue;
        }
        for tok in rest.split_whitespace().take(16) {
            match u8::from_str_radix(tok, 16) {
                Ok(b) if tok.len() == 2 => bytes.push(b),
                _ => break,
            }
        }
    }
    assert_eq!(
        bytes.len() as u64,
        len,
        "could not parse qemu-io read -v output"
    );
    bytes
}

/// A small deterministic generator (xorshift64*): reproducible cases.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Points every entry of the qcow2 `path`'s active L1 table at the first
/// entry's L2 table (the shape a hostile image uses to multiply a walk
/// over one real table). Returns the L1 table's offset, its number of
/// entries and the first entry.
pub fn share_first_l2(path: &Path) -> (usize, usize, u64) {
    let mut img = std::fs::read(path).unwrap();
    let be64 = |at: usize| u64::from_be_bytes(img[at..at + 8].try_into().unwrap());
    let l1 = be64(40) as usize;
    let l1_size = u32::from_be_bytes(img[36..40].try_into().unwrap()) as usize;
    let first = be64(l1);
    for i in 1..l1_size {
        img[l1 + i * 8..l1 + i * 8 + 8].copy_from_slice(&first.to_be_bytes());
    }
    std::fs::write(path, img).unwrap();
    (l1, l1_size, first)
}

/// A directory for what a test process builds once and keeps in a
/// static (`TMPDIR/PREFIX-PID`, made anew): a static is never dropped, so
/// a `TempDir` there stayed behind after every run (the ssh fixture's,
/// 77 MB a run). Those of processes that are gone are removed first.
pub fn process_dir(prefix: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = tmp.join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
