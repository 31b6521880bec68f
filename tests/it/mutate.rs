//! Hostile images: thousands of corrupted variants of real qemu-made qcow2
//! files (random bytes and extreme header values in the metadata region),
//! each opened, mapped end to end and read through the library. Any panic
//! fails the test; every error must name the file.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::block::map::MapIter;
use layerscope::block::BlockSource;

use crate::util::need;

/// A small deterministic generator (xorshift64*): reproducible cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn qemu(dir: &Path, args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// Images with every kind of cluster: data, compressed (zlib and zstd),
/// zero, subclusters, a backing file.
fn make_images(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let io = |img: &str, cmds: &[&str]| {
        let mut args = vec!["qemu-io", "-f", "qcow2"];
        for c in cmds {
            args.push("-c");
            args.push(c);
        }
        args.push(img);
        qemu(dir, &args);
    };
    qemu(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "base.qcow2",
            "4M",
        ],
    );
    io(
        "base.qcow2",
        &[
            "write -P 0x11 0 256k",
            "write -c -P 0x22 1M 128k",
            "write -z 2M 64k",
        ],
    );
    qemu(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compression_type=zstd",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "zstd.qcow2",
        ],
    );
    io(
        "zstd.qcow2",
        &["write -c -P 0x33 0 64k", "write -P 0x44 3M 64k"],
    );
    qemu(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on,compat=1.1",
            "ext.qcow2",
            "4M",
        ],
    );
    io(
        "ext.qcow2",
        &[
            "write -P 0x55 4k 4k",
            "write -z 64k 8k",
            "write -P 0x66 1M 100k",
        ],
    );
    qemu(
        dir,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10,cluster_size=4096",
            "v2.qcow2",
            "4M",
        ],
    );
    io("v2.qcow2", &["write -P 0x77 0 300k"]);
    ["base.qcow2", "zstd.qcow2", "ext.qcow2", "v2.qcow2"]
        .into_iter()
        .map(|n| (n, std::fs::read(dir.join(n)).unwrap()))
        .collect()
}

/// Header fields and the values most likely to break a reader.
const FIELDS: &[(usize, usize)] = &[
    (4, 4),
    (8, 8),
    (16, 4),
    (20, 4),
    (24, 8),
    (32, 4),
    (36, 4),
    (40, 8),
    (72, 8),
    (96, 4),
    (100, 4),
    (104, 1),
];
const EXTREMES: &[u64] = &[
    0,
    1,
    2,
    3,
    8,
    9,
    13,
    14,
    21,
    22,
    31,
    63,
    64,
    0x7f,
    0xff,
    0x200,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(rng: &mut Rng, bytes: &mut [u8]) {
    let meta_end = bytes.len().min(0x6_0000) as u64;
    for _ in 0..=rng.below(4) {
        if rng.below(3) == 0 {
            let (off, size) = FIELDS[rng.below(FIELDS.len() as u64) as usize];
            let v = EXTREMES[rng.below(EXTREMES.len() as u64) as usize].to_be_bytes();
            if off + size <= bytes.len() {
                bytes[off..off + size].copy_from_slice(&v[8 - size..]);
            }
        } else {
            let at = rng.below(meta_end) as usize;
            bytes[at] = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                2 => bytes[at] ^ (1 << rng.below(8)),
                _ => rng.next() as u8,
            };
        }
    }
}

/// Opens, maps and reads one image; returns whether it opened.
fn exercise(path: &str, rng: &mut Rng) -> bool {
    let chain = match open_chain(path, ChainOptions::default(), &FsOpener) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains(path) || msg.contains("backing"),
                "error does not name the file: {msg}"
            );
            return false;
        }
    };
    let reader = LayeredReader::new(&chain).unwrap();
    let start = Instant::now();
    for entry in MapIter::new(&reader) {
        if entry.is_err() || start.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let size = reader.len();
    let mut buf = vec![0u8; 256 << 10];
    for _ in 0..8 {
        if size == 0 {
            break;
        }
        let off = rng.below(size);
        let n = (buf.len() as u64).min(size - off) as usize;
        let _ = reader.read_at(off, &mut buf[..n]);
    }
    true
}

#[test]
fn corrupted_qcow2_images_never_panic() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = make_images(dir.path());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cases = 2500;
    let mut opened = 0;
    let started = Instant::now();
    for (name, original) in &images {
        // Corrupt the overlay only: its backing file stays intact, so
        // mutations reach the code that stacks layers too.
        let path = dir.path().join(format!("m-{name}"));
        let path_s = path.to_str().unwrap().to_owned();
        for case in 0..cases {
            let mut bytes = original.clone();
            mutate(&mut rng, &mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            let t = Instant::now();
            if exercise(&path_s, &mut rng) {
                opened += 1;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{name} case {case} took {:?}",
                t.elapsed()
            );
        }
    }
    // Most mutations leave a readable image: the test reaches the readers,
    // not only the header checks.
    assert!(
        opened > images.len() * cases / 4,
        "only {opened} mutated images opened"
    );
    eprintln!(
        "{} mutated images, {opened} opened, {:?}",
        images.len() * cases,
        started.elapsed()
    );
}
