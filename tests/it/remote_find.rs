//! `find` and `grep` over NBD fetch the tree ahead as `ls -R` does (the
//! inode tables, then every directory's blocks, many reads in flight) and
//! answer what they answer on the local image. Oracles: the local runs
//! of the same image; nbdkit's log filter shows the reads in flight.
use crate::remote_walk::{make_walk_tree, max_reads_in_flight, nbdkit, uri};
use crate::util::*;

#[test]
fn find_and_grep_over_nbd_fetch_the_tree_ahead_and_equal_the_local_answers() {
    if !need("nbdkit") || !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    make_walk_tree(&tree);
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
            "ext4.raw",
            "64M",
        ],
    );
    let runs: [&[&str]; 3] = [
        &["find"],
        &["find", "--name", "f3.txt"],
        &["grep", "^1[0-9] 5 3$"],
    ];
    for (i, args) in runs.iter().enumerate() {
        let (cmd, rest) = args.split_first().unwrap();
        let local_args: Vec<&str> = [*cmd, "ext4.raw"].iter().chain(rest).copied().collect();
        let local = layerscope(dir, &local_args).ok().text();
        assert!(
            local.lines().count() >= 20,
            "{args:?}: too little found locally:\n{local}"
        );
        let sock = dir.join(format!("{i}.sock"));
        let log = dir.join(format!("{i}.log"));
        let logfile = format!("logfile={}", log.display());
        // The log filter in front of the delay: requests outstanding
        // together show in the log before their replies.
        let server = nbdkit(
            dir,
            &sock,
            &[
                "--filter=log",
                "--filter=delay",
                "file",
                "ext4.raw",
                &logfile,
                "rdelay=5ms",
            ],
        );
        let u = uri(&sock);
        let remote_args: Vec<&str> = [*cmd, u.as_str()].iter().chain(rest).copied().collect();
        let remote = layerscope(dir, &remote_args).ok().text();
        drop(server);
        assert!(
            local == remote,
            "{args:?}: over NBD:\n{remote}\nlocally:\n{local}"
        );
        // Listed a directory at a time, the reads would go one by one
        // (the first round's two at most).
        let in_flight = max_reads_in_flight(&std::fs::read_to_string(&log).unwrap());
        assert!(
            in_flight >= 8,
            "{args:?}: at most {in_flight} reads in flight"
        );
    }
}
