//! The fuzz targets' entry points (`src/fuzzing.rs`, run by cargo-fuzz
//! from `fuzz/`) on stable, in every CI run:
//! - every input in `fuzz/regressions/<target>/`: what the fuzzers found
//!   (a panic, a hang, memory without bound), minimised, must now finish;
//!   with them, a small covering set of each target's corpus (distilled
//!   with `-merge=1`, smallest inputs first, a few hundred KiB a target;
//!   volumes in the sparse form of `src/fuzzing/sparse.rs`), so the paths
//!   they reach stay sound; and each target's inputs, replayed in a
//!   process of their own, stay under the fuzzers' memory limit (the
//!   out-of-memory class, which a thread's time guard cannot see);
//! - tool-made images (mke2fs, mkfs.vfat, sfdisk, qemu-img) with bytes of
//!   their metadata changed at random (seeded, reproducible): the same
//!   walk must finish without a panic, within a generous guard.
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::{need, sh, Rng};

/// Far above what any input here takes (milliseconds); a hang guard only.
const GUARD: Duration = Duration::from_secs(120);

type Entry = fn(&[u8]);

fn entry(target: &str) -> Entry {
    match target {
        "image" => layerscope::fuzzing::image,
        "disk" => layerscope::fuzzing::disk,
        "filesystem" => layerscope::fuzzing::filesystem,
        "ext" => layerscope::fuzzing::ext,
        "xfs" => layerscope::fuzzing::xfs,
        "fat" => layerscope::fuzzing::fat,
        "nbd" => layerscope::fuzzing::nbd_server,
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Runs `f` on `input` in a thread: Err with the panic or the hang.
fn survives(f: Entry, input: Vec<u8>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f(&input);
        let _ = tx.send(());
    });
    match rx.recv_timeout(GUARD) {
        Ok(()) => worker.join().map_err(|_| "panicked".to_owned()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(match worker.join() {
            Err(e) => format!(
                "panicked: {}",
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            ),
            Ok(()) => "stopped without finishing".to_owned(),
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("still running after {GUARD:?}")),
    }
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions")
}

#[test]
fn every_input_the_fuzzers_found_now_finishes() {
    let mut count = 0;
    for target in ["image", "disk", "filesystem", "ext", "xfs", "fat", "nbd"] {
        let dir = regressions_dir().join(target);
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = read.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            if let Err(why) = survives(entry(target), bytes) {
                panic!("{target} {}: {why}", file.display());
            }
            count += 1;
        }
    }
    // The directory is committed with the inputs; none found means the
    // test looked in the wrong place.
    assert!(count > 0, "no inputs under {}", regressions_dir().display());
}

/// The fuzzers' memory limit (`-rss_limit_mb=512`), for a process
/// replaying one target's inputs.
const MAX_PEAK_KIB: u64 = 512 << 10;

/// The environment variable naming the target the replaying child runs
/// ([`one_targets_inputs_in_a_process_of_their_own`]), and the one that
/// lowers the bound (to see the check fail).
const REPLAY_ENV: &str = "LAYERSCOPE_FUZZ_REPLAY";
const PEAK_ENV: &str = "LAYERSCOPE_FUZZ_MAX_KIB";

/// This process's peak resident memory (`VmHWM`), in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// The child side of [`every_targets_inputs_stay_under_the_memory_limit`]:
/// the inputs of the target named by [`REPLAY_ENV`], one after another on
/// this thread, the process's peak read after each; the first input
/// after which the peak is over the bound is named. Does nothing when the
/// variable is not set (an ordinary `--ignored` run).
#[test]
#[ignore = "run by every_targets_inputs_stay_under_the_memory_limit in a child process"]
fn one_targets_inputs_in_a_process_of_their_own() {
    let Ok(target) = std::env::var(REPLAY_ENV) else {
        return;
    };
    let bound: u64 = std::env::var(PEAK_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_PEAK_KIB);
    let f = entry(&target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(regressions_dir().join(&target))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        f(&std::fs::read(file).unwrap());
        let peak = peak_kib();
        assert!(
            peak <= bound,
            "{target} {}: peak resident memory {peak} KiB after it (bound {bound} KiB)",
            file.display()
        );
    }
    println!(
        "replayed {} {target} inputs: peak {} KiB",
        files.len(),
        peak_kib()
    );
}

/// Runs [`one_targets_inputs_in_a_process_of_their_own`] in a child of
/// GNU time for `target`, with `env`: (success, the child's output).
fn replay_in_child(target: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "peak %M KiB"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fuzz_corpus::one_targets_inputs_in_a_process_of_their_own",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(REPLAY_ENV, target)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every target's inputs, replayed in a process of their own (a child of
/// GNU time: a process forked from this one would start with this test
/// process's high-water mark), keep its peak resident memory under the
/// fuzzers' limit. The out-of-memory findings (an XFS directory whose
/// damaged extent list kept 2.87M problems: 932 MB) fail here, where the
/// time guard above passes them. A bound far below the real peak fails
/// and names an input (the check can fail).
#[test]
fn every_targets_inputs_stay_under_the_memory_limit() {
    if !need("time") {
        return;
    }
    for target in ["image", "disk", "filesystem", "ext", "xfs", "fat", "nbd"] {
        if !regressions_dir().join(target).is_dir() {
            continue;
        }
        let (ok, text) = replay_in_child(target, &[]);
        assert!(ok, "{target}: {text}");
        let line = text
            .lines()
            .find_map(|l| l.find("replayed ").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("{target}: the child replayed nothing: {text}"));
        eprintln!("{line}");
    }
    let (ok, text) = replay_in_child("xfs", &[(PEAK_ENV, "1024")]);
    assert!(!ok, "a 1 MiB bound passed: {text}");
    assert!(
        text.contains("peak resident memory") && text.contains("fuzz/regressions/xfs/"),
        "{text}"
    );
}

/// `count` variants of `bytes`, each with 1 to 8 bytes in the first
/// `region` bytes set to a random value or to an extreme (0x00, 0xff,
/// 0x7f, 0x80).
fn mutants(bytes: &[u8], region: usize, count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let region = region.min(bytes.len());
    (0..count)
        .map(|_| {
            let mut m = bytes.to_vec();
            for _ in 0..=rng.below(8) {
                let at = rng.below(region);
                m[at] = match rng.below(5) {
                    0 => 0,
                    1 => 0xff,
                    2 => 0x7f,
                    3 => 0x80,
                    _ => u8::try_from(rng.next() & 0xff).unwrap(),
                };
            }
            m
        })
        .collect()
}

#[test]
fn tool_made_images_with_changed_metadata_never_panic_or_hang() {
    for t in ["mke2fs", "mkfs.vfat", "mcopy", "sfdisk", "qemu-img"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("dir/hello.txt"), b"hello\n").unwrap();
    std::fs::write(src.join("dir/sub/blob"), vec![0x5a; 20000]).unwrap();
    std::os::unix::fs::symlink("dir/hello.txt", src.join("link")).unwrap();
    let s = src.to_str().unwrap();
    sh(d, &["truncate", "-s", "512K", "ext4.raw"]);
    sh(
        d,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "^has_journal",
            "-d",
            s,
            "ext4.raw",
        ],
    );
    sh(d, &["truncate", "-s", "256K", "fat.raw"]);
    sh(d, &["mkfs.vfat", "-F", "12", "fat.raw"]);
    let fat_copy = std::process::Command::new("mcopy")
        .args(["-s", "-i", "fat.raw", &format!("{s}/dir"), "::/"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .current_dir(d)
        .output()
        .unwrap();
    assert!(fat_copy.status.success());
    sh(d, &["truncate", "-s", "1M", "gpt.raw"]);
    let table = "label: gpt\nfirst-lba: 34\n34,512,L\n600,,U\n";
    let mut sfdisk = std::process::Command::new("sfdisk")
        .args(["-q", "gpt.raw"])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let mut gpt = std::fs::read(d.join("gpt.raw")).unwrap();
    let ext4 = std::fs::read(d.join("ext4.raw")).unwrap();
    gpt[34 * 512..34 * 512 + 256 * 1024].copy_from_slice(&ext4[..256 * 1024]);
    std::fs::write(d.join("gpt.raw"), &gpt).unwrap();
    sh(
        d,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "ext4.raw",
            "ext4.qcow2",
        ],
    );
    sh(
        d,
        &[
            "qemu-img", "convert", "-q", "-O", "vpc", "gpt.raw", "gpt.vhd",
        ],
    );
    let cases: [(&str, &str, usize); 5] = [
        ("filesystem", "ext4.raw", 8 << 10),
        ("filesystem", "fat.raw", 8 << 10),
        ("disk", "gpt.raw", 34 * 512 + (8 << 10)),
        ("image", "ext4.qcow2", 24 << 10),
        ("image", "gpt.vhd", 4 << 10),
    ];
    let mut failures = Vec::new();
    for (i, (target, file, region)) in cases.iter().enumerate() {
        let bytes = std::fs::read(d.join(file)).unwrap();
        // The unchanged image opens and walks too (the baseline).
        for (n, m) in std::iter::once(bytes.clone())
            .chain(mutants(&bytes, *region, 150, 0x9e37_79b9 + i as u64))
            .enumerate()
        {
            if let Err(why) = survives(entry(target), m.clone()) {
                let keep = d.join(format!("failed-{file}-{n}"));
                std::fs::write(&keep, &m).unwrap();
                failures.push(format!("{target} {file} variant {n}: {why}"));
            }
        }
    }
    if !failures.is_empty() {
        let kept = dir.keep();
        panic!(
            "{}\n(the inputs are kept in {})",
            failures.join("\n"),
            kept.display()
        );
    }
}
