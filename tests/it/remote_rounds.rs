//! How many round trips `ls -R` over NBD waits for, counted in nbdkit's
//! log: a tree walk's export probe reads the disk's head (a 256th of the
//! disk, at most 8 MiB), which holds the inode tables ext4 packs after
//! its first group descriptors, so the walk is the probe's round, then
//! one round of every directory's blocks (and the map blocks of those
//! whose extent tree has a level below the inode), then the blocks of
//! those. Oracles: the tree the image
//! was made from and the local listing; dumpe2fs for where the tables
//! in use are.
use crate::remote_walk::{
    itables_in_use, listed_paths, make_walk_tree, nbdkit, read_requests, uri,
};
use crate::util::*;

/// The rounds of requests the client waited for, from nbdkit's log (in
/// the order nbdkit logged its requests and replies): a request's round
/// is one more than the latest round of the replies that came before it
/// was taken up, so requests sent together are one round and a request
/// sent after a reply it needed is the next.
fn rounds(log: &str) -> usize {
    use std::collections::HashMap;
    let mut round_of: HashMap<(String, String), usize> = HashMap::new();
    let (mut answered, mut most) = (0usize, 0usize);
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(conn) = words.iter().find(|w| w.starts_with("connection=")) else {
            continue;
        };
        let Some(id) = words.iter().find(|w| w.starts_with("id=")) else {
            continue;
        };
        let Some(i) = words.iter().position(|w| w.starts_with("id=")) else {
            continue;
        };
        let what = words[i - 1];
        if !["Read", "Extents", "...Read", "...Extents"].contains(&what) {
            continue;
        }
        let key = (conn.to_string(), format!("{what}{id}").replace("...", ""));
        if what.starts_with("...") {
            answered = answered.max(round_of.get(&key).copied().unwrap_or(0));
        } else {
            round_of.insert(key, answered + 1);
            most = most.max(answered + 1);
        }
    }
    most
}

#[test]
fn ls_r_over_nbd_is_the_probe_round_then_the_directories() {
    if !need("nbdkit") || !need("mke2fs") || !need("dumpe2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    let want = make_walk_tree(&tree);
    // 1 GiB: the probe's head is 4 MiB.
    let image = "walk.ext4";
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
            image,
            "1G",
        ],
    );
    let itables = itables_in_use(dir, image);
    assert!(
        itables.iter().all(|&(at, len)| at + len <= 4 << 20),
        "the tables in use lie past the head: {itables:x?}"
    );
    let local = layerscope(dir, &["ls", "-R", image]).ok().text();
    assert_eq!(listed_paths(&local), want, "the local listing");
    let sock = dir.join("walk.sock");
    let log = dir.join("walk.log");
    let logfile = format!("logfile={}", log.display());
    // A delay long against the machine's scheduling, so that requests
    // sent together are taken up before any of them is answered.
    let server = nbdkit(
        dir,
        &sock,
        &[
            "--filter=log",
            "--filter=delay",
            "file",
            image,
            &logfile,
            "rdelay=50ms",
            "delay-extents=50ms",
        ],
    );
    let remote = layerscope(dir, &["ls", "-R", &uri(&sock)]).ok().text();
    drop(server);
    assert!(
        local == remote,
        "ls -R over NBD differs from the local listing"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    // The tables came with the probe: no request after the first round
    // reads them.
    let reads = read_requests(&text);
    let probe_end = reads
        .iter()
        .position(|r| r.0 >= 4 << 20 && r.0 < (1 << 30) - 4096)
        .expect("directory blocks were read");
    let late: Vec<_> = reads[probe_end..]
        .iter()
        .filter(|r| itables.iter().any(|t| r.0 < t.0 + t.1 && t.0 < r.0 + r.1))
        .collect();
    assert!(
        late.is_empty(),
        "inode tables read after the probe: {late:x?}"
    );
    // The probe; 192 directories, each one request (16 connections of 16
    // requests in flight take them in one round), with the extent tree
    // leaves of those that have an index block (/big, 3000 names, as
    // debugfs's `stat` shows with mke2fs 1.47); then those directories'
    // blocks. Before the head came with the probe, the inode tables were
    // a round of their own: 4.
    let stat = sh(dir, &["debugfs", "-R", "stat /big", image]);
    let indexed = String::from_utf8_lossy(&stat.stdout).contains("(ETB0)");
    let want_rounds = if indexed { 3 } else { 2 };
    let n = rounds(&text);
    assert!(
        n <= want_rounds,
        "ls -R waited for {n} rounds of requests, not {want_rounds}"
    );
}
