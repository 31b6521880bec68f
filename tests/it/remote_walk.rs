//! Metadata walks over a remote source with requests in flight: `ls -R`
//! over NBD fetches a level of the tree at a time (inodes, map blocks,
//! directory blocks, each step one batch), and `read_many` sends scattered
//! ranges together. Oracles: the tree the image was made from, the local
//! listing of the same image, the file's bytes; nbdkit's log filter shows
//! the requests in flight.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::block::nbd::{NbdClient, NbdUri, Options};
use layerscope::block::BlockSource;
use layerscope::fs::ext::Ext4;

use crate::util::*;

/// nbdkit in the foreground, killed when dropped.
pub(crate) struct Nbdkit(Child);

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn nbdkit(dir: &Path, sock: &Path, args: &[&str]) -> Nbdkit {
    let child = Command::new("nbdkit")
        .args(["-f", "-U", sock.to_str().unwrap()])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nbdkit");
    let server = Nbdkit(child);
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nbdkit did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

pub(crate) fn uri(sock: &Path) -> String {
    format!("nbd+unix:///?socket={}", sock.display())
}

/// A tree of three levels (20 directories of 8 subdirectories of 4
/// files), a directory of 3000 long names (36 blocks: an indirect block
/// on ext2), and a chain of nested directories 9 deep; its paths.
pub(crate) fn make_walk_tree(root: &Path) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut add = |p: &Path| {
        paths.insert(p.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
    };
    for a in 0..20 {
        for b in 0..8 {
            let d = root.join(format!("a{a:02}")).join(format!("b{b}"));
            std::fs::create_dir_all(&d).unwrap();
            add(d.parent().unwrap());
            add(&d);
            for f in 0..4 {
                let p = d.join(format!("f{f}.txt"));
                std::fs::write(&p, format!("{a} {b} {f}\n").repeat(a * 40 + f)).unwrap();
                add(&p);
            }
        }
    }
    let big = root.join("big");
    std::fs::create_dir_all(&big).unwrap();
    add(&big);
    for i in 0..3000 {
        let p = big.join(format!("a-rather-long-file-name-to-fill-blocks-{i:05}"));
        std::fs::write(&p, b"x").unwrap();
        add(&p);
    }
    let mut deep = root.to_path_buf();
    for i in 0..9 {
        deep = deep.join(format!("deep{i}"));
        std::fs::create_dir_all(&deep).unwrap();
        add(&deep);
    }
    let leaf = deep.join("leaf");
    std::fs::write(&leaf, b"bottom\n").unwrap();
    add(&leaf);
    paths
}

/// The paths `ls -R` printed (directory headers and names joined), but
/// `.`, `..` and lost+found's.
pub(crate) fn listed_paths(out: &str) -> BTreeSet<String> {
    let mut dir = String::new();
    let mut paths = BTreeSet::new();
    for line in out.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_suffix(':').filter(|h| h.starts_with('/')) {
            dir = h.trim_start_matches('/').to_owned();
            continue;
        }
        if line == "." || line == ".." || dir.starts_with("lost+found") {
            continue;
        }
        paths.insert(if dir.is_empty() {
            line.to_owned()
        } else {
            format!("{dir}/{line}")
        });
    }
    paths.remove("lost+found");
    paths
}

/// The most reads nbdkit's log filter shows outstanding at once.
pub(crate) fn max_reads_in_flight(log: &str) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for line in log.lines() {
        if line.contains(" Read id=") {
            now += 1;
            max = max.max(now);
        } else if line.contains("...Read id=") {
            now = now.saturating_sub(1);
        }
    }
    max
}

#[test]
fn ls_r_over_nbd_equals_the_local_listing_with_reads_in_flight() {
    if !need("nbdkit") || !need("mke2fs") || !need("dumpe2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    let want = make_walk_tree(&tree);
    for kind in ["ext4", "ext2"] {
        let image = format!("{kind}.raw");
        sh(
            dir,
            &[
                "mke2fs",
                "-q",
                "-t",
                kind,
                "-b",
                "4096",
                "-E",
                "root_owner=0:0",
                "-d",
                tree.to_str().unwrap(),
                &image,
                "64M",
            ],
        );
        let local = layerscope(dir, &["ls", "-R", &image]).ok().text();
        assert_eq!(listed_paths(&local), want, "{kind}: the local listing");
        let sock = dir.join(format!("{kind}.sock"));
        let log = dir.join(format!("{kind}.log"));
        let logfile = format!("logfile={}", log.display());
        // A short delay on each read (the log filter in front of it) makes
        // the requests outstanding together visible in the log.
        let server = nbdkit(
            dir,
            &sock,
            &[
                "--filter=log",
                "--filter=delay",
                "file",
                &image,
                &logfile,
                "rdelay=5ms",
            ],
        );
        let remote = layerscope(dir, &["ls", "-R", &uri(&sock)]).ok().text();
        drop(server);
        assert!(
            local == remote,
            "{kind}: ls -R over NBD differs from the local listing"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let in_flight = max_reads_in_flight(&text);
        // 181 directories at the second and third levels: fetched a level
        // at a time, many reads are outstanding together.
        assert!(
            in_flight >= 8,
            "{kind}: at most {in_flight} reads in flight"
        );
        // The in-use inode tables, as dumpe2fs shows them, are what the
        // first batch fetches: no inode table is read once the second
        // level's directory blocks are asked for (each batch waits for
        // the one before, so the log's order is the batches' order).
        let itables = itables_in_use(dir, &image);
        let chain = open_chain(
            dir.join(&image).to_str().unwrap(),
            ChainOptions::default(),
            &FsOpener,
        )
        .unwrap();
        let fs = Ext4::open(Arc::new(LayeredReader::new(&chain).unwrap())).unwrap();
        assert_eq!(fs.itables_in_use(), itables, "{kind}: vs dumpe2fs");
        let mut level2 = Vec::new();
        for a in 0..20 {
            let out = sh(dir, &["debugfs", "-R", &format!("blocks /a{a:02}"), &image]);
            for b in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                level2.push((b.parse::<u64>().unwrap() * 4096, 4096));
            }
        }
        assert_eq!(level2.len(), 20, "{kind}: one block each");
        let reads = read_requests(&text);
        let overlaps = |r: (u64, u64), set: &[(u64, u64)]| {
            set.iter().any(|s| r.0 < s.0 + s.1 && s.0 < r.0 + r.1)
        };
        let first = reads
            .iter()
            .position(|&r| overlaps(r, &level2))
            .expect("the second level's blocks were read");
        assert!(
            reads[..first].iter().any(|&r| overlaps(r, &itables)),
            "{kind}: the tables were not read before the second level"
        );
        let late: Vec<_> = reads[first..]
            .iter()
            .filter(|&&r| overlaps(r, &itables))
            .collect();
        assert!(
            late.is_empty(),
            "{kind}: inode table reads after the first batch: {late:x?}"
        );
    }
}

/// The Read requests of nbdkit's log, in order: (offset, count).
pub(crate) fn read_requests(log: &str) -> Vec<(u64, u64)> {
    let hex = |w: &str, key: &str| {
        w.strip_prefix(key)
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    };
    log.lines()
        .filter(|l| l.contains(" Read id="))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let offset = words.iter().find_map(|w| hex(w, "offset="))?;
            let count = words.iter().find_map(|w| hex(w, "count="))?;
            Some((offset, count))
        })
        .collect()
}

/// The in-use part of each group's inode table in dumpe2fs's words (byte
/// ranges): the table ("Inode table at A-B") but its "unused inodes" at
/// the end, none in a group flagged INODE_UNINIT; the whole table when
/// the descriptors have no checksums (dumpe2fs then prints no unused
/// count).
pub(crate) fn itables_in_use(dir: &Path, image: &str) -> Vec<(u64, u64)> {
    let out = sh(dir, &["dumpe2fs", image]);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let (bs, ipg, isize) = (
        field("Block size:"),
        field("Inodes per group:"),
        field("Inode size:"),
    );
    let mut out = Vec::new();
    let groups = text.split("\nGroup ").skip(1);
    for group in groups.filter(|g| g.starts_with(|c: char| c.is_ascii_digit())) {
        let uninit = group.lines().next().unwrap().contains("INODE_UNINIT");
        let start: u64 = group
            .split("Inode table at ")
            .nth(1)
            .unwrap()
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let unused = group
            .split(" unused inodes")
            .next()
            .filter(|_| group.contains(" unused inodes"))
            .map(|b| b.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .unwrap_or(0);
        let used = if uninit { 0 } else { ipg - unused };
        if used > 0 {
            out.push((start * bs, used * isize));
        }
    }
    out
}

/// Scattered ranges (some longer than one request, some sharing bytes)
/// read with `read_many` over multi-conn equal the file; the log shows
/// them in flight on several connections.
#[test]
fn read_many_over_nbd_equals_the_file() {
    if !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let bytes: Vec<u8> = (0..(24u64 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("disk.raw"), &bytes).unwrap();
    let sock = dir.join("rm.sock");
    let log = dir.join("rm.log");
    let logfile = format!("logfile={}", log.display());
    let server = nbdkit(
        dir,
        &sock,
        &[
            "--filter=log",
            "--filter=delay",
            "file",
            "disk.raw",
            &logfile,
            "rdelay=2ms",
        ],
    );
    let client =
        NbdClient::connect(NbdUri::parse(&uri(&sock)).unwrap(), Options::default()).unwrap();
    let mut ranges: Vec<(u64, usize)> = (0..300u64)
        .map(|i| {
            (
                (i * 7919 * 4099) % (23 << 20),
                1 + (i as usize * 977) % 20_000,
            )
        })
        .collect();
    ranges.push((0, 600 << 10));
    ranges.push((bytes.len() as u64 - 100, 100));
    ranges.push((4096, 10));
    let mut bufs: Vec<Vec<u8>> = ranges.iter().map(|&(_, n)| vec![0xa5; n]).collect();
    let mut reqs: Vec<(u64, &mut [u8])> = ranges
        .iter()
        .zip(bufs.iter_mut())
        .map(|(&(o, _), b)| (o, b.as_mut_slice()))
        .collect();
    client.read_many(&mut reqs).unwrap();
    for (&(o, n), b) in ranges.iter().zip(&bufs) {
        assert!(
            b[..] == bytes[o as usize..o as usize + n],
            "range {o:#x}+{n} differs"
        );
    }
    // A batch is its caller's to keep (a filesystem's page store): the
    // client's recent reads hold none of it, only single reads.
    assert_eq!(client.recent_bytes(), 0);
    let mut one = vec![0u8; 4096];
    client.read_many(&mut [(8192, one.as_mut_slice())]).unwrap();
    assert!(one[..] == bytes[8192..8192 + 4096]);
    assert_eq!(client.recent_bytes(), 4096);
    // Past the end: an error, nothing read.
    let mut past = vec![0u8; 10];
    assert!(client
        .read_many(&mut [(bytes.len() as u64 - 5, past.as_mut_slice())])
        .is_err());
    drop(client);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        max_reads_in_flight(&text) >= 8,
        "{}",
        max_reads_in_flight(&text)
    );
    let conns: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains(" Read id="))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("connection=")))
        .collect();
    assert!(conns.len() > 1, "one connection: {conns:?}");
}

/// One long range in a batch (a filesystem's inode tables fetched
/// ahead) is a few large requests, all in one round on one connection:
/// nbdkit's log shows 4 reads of 2 MiB for an 8 MiB range (32 of 256 KiB
/// before, spread over 4 connections that first had to shake hands), all
/// outstanding together; the bytes equal the file.
#[test]
fn a_long_range_in_a_batch_is_a_few_requests_in_one_round() {
    if !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let bytes: Vec<u8> = (0..(12u64 << 20))
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    std::fs::write(dir.join("disk.raw"), &bytes).unwrap();
    let sock = dir.join("long.sock");
    let log = dir.join("long.log");
    let logfile = format!("logfile={}", log.display());
    // A delay on each read: requests sent one round after another
    // would not be outstanding together in the log. 200 ms, not 20: at
    // a load of 10 on 2 cores the client was once descheduled between
    // its third and fourth request for longer than 20 ms (1 run in 4).
    let server = nbdkit(
        dir,
        &sock,
        &[
            "--filter=log",
            "--filter=delay",
            "file",
            "disk.raw",
            &logfile,
            "rdelay=200ms",
        ],
    );
    let client =
        NbdClient::connect(NbdUri::parse(&uri(&sock)).unwrap(), Options::default()).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    client
        .read_many(&mut [(1 << 20, buf.as_mut_slice())])
        .unwrap();
    assert!(buf[..] == bytes[1 << 20..9 << 20], "the range differs");
    drop(client);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    // nbdkit's threads log the requests of one round in the order they
    // take them up, not the order they were sent: the set is the point.
    let mut reads = read_requests(&text);
    reads.sort_unstable();
    let want: Vec<(u64, u64)> = (0..4).map(|i| ((1 + 2 * i) << 20, 2 << 20)).collect();
    assert_eq!(reads, want, "the range's requests");
    assert_eq!(max_reads_in_flight(&text), 4, "not in one round");
    let conns: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains(" Read id="))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("connection=")))
        .collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
}

/// A server that stops answering in the middle of a batch: the batch
/// ends with a time-out error naming the server, not a hang.
#[test]
fn a_batch_to_a_stalled_server_times_out() {
    if !need("nbdkit") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let sock = dir.join("slow.sock");
    let _slow = nbdkit(
        dir,
        &sock,
        &["--filter=delay", "memory", "16M", "delay-read=30"],
    );
    let opts = Options {
        request_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(2),
        reconnect_attempts: 0,
        ..Options::default()
    };
    let client = NbdClient::connect(NbdUri::parse(&uri(&sock)).unwrap(), opts).unwrap();
    let start = Instant::now();
    let mut bufs: Vec<Vec<u8>> = (0..100).map(|_| vec![0u8; 4096]).collect();
    let mut reqs: Vec<(u64, &mut [u8])> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| (i as u64 * 65536, b.as_mut_slice()))
        .collect();
    let err = client.read_many(&mut reqs).unwrap_err();
    // A guard against a hang, not a timing figure.
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    let msg = format!("{err:#}");
    assert!(msg.contains(&sock.display().to_string()), "{msg}");
}

/// Once the filesystem has fetched every directory ahead
/// (`Ext4::prefetch_all_dirs`, what `ls -R /` asks first: the in-use
/// inode tables say which inodes are directories, and all their map and
/// directory blocks follow in a few batches), walking the whole tree
/// costs no further request. Oracles: the tree the image was made from
/// (through the local `ls -R`), and the client's request counter.
#[test]
fn once_every_directory_is_fetched_ahead_the_walk_costs_no_request() {
    use layerscope::fs::{FileType, Filesystem};
    use std::ops::ControlFlow;
    if !need("nbdkit") || !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    let want = make_walk_tree(&tree);
    for kind in ["ext4", "ext2"] {
        let image = format!("{kind}.raw");
        sh(
            dir,
            &[
                "mke2fs",
                "-q",
                "-t",
                kind,
                "-b",
                "4096",
                "-d",
                tree.to_str().unwrap(),
                &image,
                "64M",
            ],
        );
        let local = layerscope(dir, &["ls", "-R", &image]).ok().text();
        assert_eq!(listed_paths(&local), want, "{kind}: the local listing");
        let sock = dir.join(format!("all-{kind}.sock"));
        let _server = nbdkit(dir, &sock, &["file", &image]);
        let chain = layerscope::block::chain::open_nbd(&uri(&sock), Options::default()).unwrap();
        let client = chain.layers[0].nbd.clone().expect("an NBD layer");
        let fs = Ext4::open(Arc::new(LayeredReader::new(&chain).unwrap())).unwrap();
        let held: BTreeSet<u64> = fs.prefetch_all_dirs().unwrap().into_iter().collect();
        // Every directory is said to be held: the tree's, the root and
        // lost+found (the walk below checks that they are).
        let dirs = want.iter().filter(|p| tree.join(p).is_dir()).count();
        assert_eq!(held.len(), dirs + 2, "{kind}: directories held");
        let before = client.stats().snapshot().requests;
        let mut seen = BTreeSet::new();
        let mut stack = vec![(Filesystem::root(&fs), String::new())];
        while let Some((node, path)) = stack.pop() {
            let mut problems = Vec::new();
            Filesystem::read_dir(&fs, node, &mut problems, &mut |e| {
                let name = String::from_utf8(e.name.clone()).unwrap();
                if e.is_dot_or_dotdot() || (path.is_empty() && name == "lost+found") {
                    return ControlFlow::Continue(());
                }
                let p = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                if e.file_type == Some(FileType::Directory) {
                    stack.push((e.node, p.clone()));
                }
                seen.insert(p);
                ControlFlow::Continue(())
            })
            .unwrap();
            assert!(problems.is_empty(), "{kind} {path}: {problems:?}");
        }
        assert_eq!(seen, want, "{kind}: the walk over NBD");
        assert_eq!(
            client.stats().snapshot().requests,
            before,
            "{kind}: the walk sent requests after every directory was fetched ahead"
        );
    }
}
