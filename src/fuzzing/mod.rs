//! Entry points for coverage-guided fuzzing (`fuzz/`, cargo-fuzz) and for
//! the stable test that replays the fuzz corpus and every crash the
//! fuzzers found (`tests/it/fuzz_corpus.rs`).
//!
//! Each entry takes untrusted bytes and drives them through the same
//! library paths the CLI and the TUI use: image format probe and readers,
//! the backing chain, the layered reader, the volume scan (MBR, GPT, LVM)
//! and every filesystem behind [`crate::fs::Filesystem`]. What the fuzzers
//! look for is a panic, an abort (memory), or a timeout (time that follows
//! what the bytes claim rather than what they hold), so every walk here
//! has a budget that is small but real: it touches every kind of
//! structure without making a fuzz run slow.
//!
//! Not a public API: the module is `#[doc(hidden)]` and may change with
//! the fuzz targets.
// Fuzz inputs are disk data (issue 11): no panic, no wrap here either.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::block::chain::{open_chain, Chain, ChainOptions, FileId, Opened, Opener};
use crate::block::layered::LayeredReader;
use crate::block::probe::Format;
use crate::block::storage::Storage;
use crate::block::BlockSource;
use crate::fs::{FileType, Filesystem, NodeId};

pub(crate) mod sparse;

/// The directory the fuzz input is "in".
const DIR: &str = "/fuzz";

/// Nodes one filesystem walk visits at most.
const MAX_NODES: usize = 1000;
/// Nodes whose full report (`stat`'s field listing) is built at most: the
/// report is the same code for every node, and building it for each of a
/// thousand was most of the filesystem target's time.
const MAX_REPORTS: usize = 32;
/// Directory depth the walk follows at most.
const MAX_DEPTH: usize = 32;
/// File bytes read per filesystem at most.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Bytes of a disk or layer whose allocation status is asked.
const MAX_STATUS: u64 = 256 << 20;
/// Dirty runs of one bitmap taken at most.
const MAX_RUNS: usize = 4096;
/// Volumes opened per disk at most.
const MAX_VOLUMES: usize = 8;

/// Opens the input as the top image; a backing file of any other name is
/// the same bytes again (a different file, so a chain forms), and the
/// same name twice is a loop the chain must refuse.
struct FuzzOpener {
    storage: Arc<dyn Storage>,
}

impl Opener for FuzzOpener {
    fn open(&self, path: &str) -> Result<Opened, crate::block::BlockError> {
        Ok(Opened {
            storage: self.storage.clone(),
            id: FileId::Name(path.to_owned()),
        })
    }

    fn siblings(&self, _path: &str) -> Result<Vec<String>, crate::block::BlockError> {
        Ok(vec![format!("{DIR}/sibling")])
    }
}

/// The input as an image file of any format layerscope reads (probed as
/// the CLI probes), with the chain it names, the disk it holds, its
/// volumes and their filesystems.
pub fn image(bytes: &[u8]) {
    let opts = ChainOptions {
        // A VHDX log is reported, not replayed: read past it so the
        // fuzzer reaches the BAT and the metadata behind it.
        log_as_is: true,
        ..ChainOptions::default()
    };
    open_and_walk(bytes, opts);
}

/// The input as a raw disk: partition tables, LVM and filesystems only
/// (the fastest way for a fuzzer to reach the volume and filesystem
/// decoders).
pub fn disk(bytes: &[u8]) {
    open_and_walk(
        bytes,
        ChainOptions {
            format: Some(Format::Raw),
            ..ChainOptions::default()
        },
    );
}

/// The input as the volume a filesystem is on, without the volume scan.
pub fn filesystem(bytes: &[u8]) {
    one_filesystem(bytes, crate::fs::open);
}

/// The input as the volume of an ext2/3/4 filesystem (its journal
/// replayed, as a mount would). The `filesystem` target probes every kind;
/// these three each hold one, so that mutations stay within one kind's
/// structures and one kind's slow inputs (a FAT read whole by `check`) do
/// not slow the others' runs.
pub fn ext(bytes: &[u8]) {
    one_filesystem(bytes, |s| {
        crate::fs::ext::Ext4::open_with(s, &crate::fs::Mount::default()).map(shared)
    });
}

/// The input as the volume of an XFS filesystem (see [`ext`]).
pub fn xfs(bytes: &[u8]) {
    one_filesystem(bytes, |s| crate::fs::xfs::Xfs::open(s).map(shared));
}

/// The input as the volume of a FAT12/16/32 filesystem (see [`ext`]).
pub fn fat(bytes: &[u8]) {
    one_filesystem(bytes, |s| crate::fs::fat::Fat::open(s).map(shared));
}

/// One filesystem behind the trait (an unsized coercion, not an `as`).
fn shared<F: Filesystem + 'static>(fs: F) -> Arc<dyn Filesystem> {
    Arc::new(fs)
}

type OpenFs = fn(Arc<dyn BlockSource>) -> Result<Arc<dyn Filesystem>, crate::fs::FsError>;

fn one_filesystem(bytes: &[u8], open: OpenFs) {
    let opts = ChainOptions {
        format: Some(Format::Raw),
        ..ChainOptions::default()
    };
    let storage = sparse::storage(bytes);
    let Some((_, reader)) = reader(storage, opts) else {
        return;
    };
    if let Ok(fs) = open(reader) {
        walk(fs.as_ref());
        check(fs.as_ref());
    }
}

/// What `check` does with the filesystem: every structure cross-checked
/// (bitmaps, counts, tables, chains), the way the CLI runs it. Its cost
/// must follow what the volume holds, not what its fields claim; a CLI
/// sweep of fuzz inputs found three checks that did not (issue 11), so the
/// fuzzer drives them too.
fn check(fs: &dyn Filesystem) {
    let no_layer = |_: u64| None;
    let quiet = crate::check::NoProgress;
    let any = fs.as_any();
    if let Some(ext) = any.downcast_ref::<crate::fs::ext::Ext4>() {
        let _ = crate::check::ext::check(ext, &no_layer, &quiet);
    } else if let Some(fat) = any.downcast_ref::<crate::fs::fat::Fat>() {
        let _ = crate::check::fat::check(fat, &no_layer, &quiet);
    } else if let Some(xfs) = any.downcast_ref::<crate::fs::xfs::Xfs>() {
        let _ = crate::check::xfs::check(xfs, &no_layer, &quiet);
    }
}

fn reader(storage: Arc<dyn Storage>, opts: ChainOptions) -> Option<(Chain, Arc<dyn BlockSource>)> {
    let opener = FuzzOpener { storage };
    let chain = open_chain(&format!("{DIR}/top"), opts, &opener).ok()?;
    let reader = LayeredReader::new(&chain).ok()?;
    Some((chain, Arc::new(reader)))
}

fn open_and_walk(bytes: &[u8], opts: ChainOptions) {
    let storage = sparse::storage(bytes);
    let Some((chain, disk)) = reader(storage.clone(), opts.clone()) else {
        return;
    };
    sample_reads(disk.as_ref());
    let snapshot = layers(&chain);
    drop(chain);
    // The top layer as it was at its first internal snapshot, as
    // `--snapshot` opens it (its own L1 table and size).
    if let Some(id) = snapshot {
        let at = ChainOptions {
            snapshot: Some(id),
            ..opts
        };
        if let Some((_, old)) = reader(storage, at) {
            sample_reads(old.as_ref());
        }
    }
    let Ok(tree) = crate::volume::scan(disk.clone()) else {
        return;
    };
    let _ = tree.describe();
    for volume in tree.volumes.iter().take(MAX_VOLUMES) {
        let Ok(source) = volume.source_over(disk.clone()) else {
            continue;
        };
        sample_reads(source.as_ref());
        if let Ok(fs) = crate::fs::open(source) {
            walk(fs.as_ref());
        }
    }
}

/// What `chain`, `info` and `bitmap` read of each layer besides its data:
/// the image reader's facts and held bytes, and for qcow2 the snapshot
/// table, the bitmap directory and each bitmap's dirty runs. Returns the
/// ID of the top layer's first internal snapshot, if it has one.
fn layers(chain: &Chain) -> Option<String> {
    let mut first_snapshot = None;
    for layer in &chain.layers {
        let _ = layer
            .source
            .block_status(0, layer.source.len().min(MAX_STATUS));
        if let Some(info) = &layer.info {
            let _ = info.summary();
            let _ = info.facts();
            let _ = info.format_specific();
            let _ = info.held_bytes();
            let _ = info.content_ids();
        }
        let Some(q) = &layer.qcow2 else {
            continue;
        };
        let _ = q.held_bytes();
        // What `check` reads of a qcow2 layer: refcounts against the
        // clusters the tables use, as `qemu-img check` does.
        let _ = crate::check::qcow2::check(layer.index, q, &crate::check::NoProgress);
        if let Ok(snapshots) = q.snapshots() {
            for s in &snapshots {
                let _ = s.json();
            }
            first_snapshot = snapshots.first().map(|s| s.id.clone());
        }
        if let Ok(bitmaps) = q.bitmaps() {
            for b in bitmaps.iter().take(4) {
                let _ = b.json();
                let mut runs = 0usize;
                let _ = q.bitmap_runs(&b.name, &mut |_, _, _| {
                    runs = runs.saturating_add(1);
                    if runs >= MAX_RUNS {
                        Err(crate::block::BlockError::unsupported(DIR, "enough runs"))
                    } else {
                        Ok(())
                    }
                });
            }
        }
    }
    first_snapshot
}

/// Reads at the start, the middle and the end, where format readers keep
/// their tables and filesystems their superblocks and backups, and asks
/// the allocation status of the start, as `map` does.
fn sample_reads(source: &dyn BlockSource) {
    let len = source.len();
    let mut buf = vec![0u8; 64 << 10];
    for at in [0, len / 2, len.saturating_sub(64 << 10)] {
        let n = usize::try_from(len.saturating_sub(at).min(64 << 10)).unwrap_or(0);
        if let Some(part) = buf.get_mut(..n) {
            let _ = source.read_at(at, part);
        }
    }
    let _ = source.block_status(0, len.min(MAX_STATUS));
}

/// Visits the filesystem as `ls -R`, `stat`, `cat`, `info` and `groups`
/// do, within the budgets above.
fn walk(fs: &dyn Filesystem) {
    let _ = fs.superblock();
    let _ = fs.label();
    let _ = fs.uuid();
    let _ = fs.groups(0, 16);
    let _ = fs.group_report(0);
    let mut budget = Budget {
        nodes: MAX_NODES,
        reports: MAX_REPORTS,
        bytes: MAX_FILE_BYTES,
    };
    let mut stack: Vec<(NodeId, usize)> = vec![(fs.root(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let mut problems = Vec::new();
        let mut children = Vec::new();
        let _ = fs.read_dir(dir, &mut problems, &mut |entry| {
            if budget.nodes == 0 {
                return ControlFlow::Break(());
            }
            budget.nodes = budget.nodes.saturating_sub(1);
            if !entry.is_dot_or_dotdot() {
                children.push(entry.node);
            }
            ControlFlow::Continue(())
        });
        for node in children {
            let Ok(meta) = fs.metadata(node) else {
                continue;
            };
            if budget.reports > 0 {
                budget.reports = budget.reports.saturating_sub(1);
                let _ = fs.node_report(node);
            }
            let _ = fs.xattrs(node, &mut problems);
            match meta.file_type {
                FileType::Directory if depth < MAX_DEPTH => {
                    stack.push((node, depth.saturating_add(1)))
                }
                FileType::Regular => read_file(fs, node, &mut budget, &mut problems),
                FileType::Symlink => {
                    let _ = fs.read_link(node);
                }
                _ => {}
            }
        }
        if budget.nodes == 0 {
            break;
        }
    }
    let _ = fs.lookup(b"/a/b/c");
    if let Some(ext) = fs.as_any().downcast_ref::<crate::fs::ext::Ext4>() {
        journal(ext);
    }
}

/// What `journal` reads of an ext3/4 journal besides the replay `open`
/// already did: the log walk and recovery, the fast-commit area, the
/// block classification and the orphan list.
fn journal(ext: &crate::fs::ext::Ext4) {
    use crate::fs::ext::jbd2::{classify::Layout, fast_commit, orphan};
    if let Ok(Some(journal)) = ext.journal_log(None) {
        let rec = ext.recover(&journal);
        let _ = fast_commit::scan(&journal.geometry, &journal.log, rec.end_transaction);
        // As `journal` does: the block classification (every group's
        // descriptor, up to a million) only for a filesystem with a log to
        // describe. Read for every input, it took 44% of the filesystem
        // target's time on its corpus.
        if let Ok(layout) = Layout::read(ext) {
            for block in 0..64 {
                let _ = layout.what(block);
            }
        }
    }
    let _ = orphan::orphans(ext);
}

struct Budget {
    nodes: usize,
    reports: usize,
    bytes: u64,
}

fn read_file(
    fs: &dyn Filesystem,
    node: NodeId,
    budget: &mut Budget,
    problems: &mut Vec<crate::fs::Problem>,
) {
    let mut runs = 0usize;
    let _ = fs.runs(node, problems, &mut |_| {
        runs = runs.saturating_add(1);
        if runs >= 256 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let mut buf = [0u8; 16 << 10];
    let mut offset = 0u64;
    while budget.bytes > 0 {
        match fs.read_file(node, offset, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                budget.bytes = budget.bytes.saturating_sub(n);
                offset = offset.saturating_add(n);
            }
        }
    }
}

/// The input as everything an NBD server says in one session: the
/// handshake's replies, then the replies to the client's requests, in
/// order. A server thread on a unix socket sends it whole (whatever the
/// client asks), closes its side, and drains what the client sends; the
/// client connects, negotiates, and reads, asks block status and reads
/// again as `map` and `read` do. Cookies are 1, 2, 3… so a fuzzer finds
/// replies that match. What is looked for: a panic, memory that follows a
/// length the server claims, or a wait past the deadlines (short here).
pub fn nbd_server(bytes: &[u8]) {
    use crate::block::nbd::client::{NbdClient, Options};
    use crate::block::nbd::uri::NbdUri;
    use std::time::Duration;

    let Some(server) = script_server() else {
        return;
    };
    if let Ok(mut s) = server.script.lock() {
        *s = Arc::from(bytes);
    }
    let Ok(uri) = NbdUri::parse(&format!("nbd+unix:///?socket={}", server.path)) else {
        return;
    };
    let opts = Options {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(1),
        reconnect_attempts: 0,
        connections: 1,
        ..Options::default()
    };
    let Ok(client) = NbdClient::connect(uri, opts) else {
        return;
    };
    let len = client.len();
    let mut buf = vec![0u8; 64 << 10];
    let n = usize::try_from(len.min(64 << 10)).unwrap_or(0);
    if let Some(part) = buf.get_mut(..n) {
        let _ = client.read_at(0, part);
    }
    let _ = client.block_status(0, len.min(1 << 30));
    let _ = client.status_all(0, len.min(1 << 20));
    let at = len / 2;
    let n = usize::try_from(len.saturating_sub(at).min(64 << 10)).unwrap_or(0);
    if let Some(part) = buf.get_mut(..n) {
        let _ = client.read_at(at, part);
    }
}

/// The scripted server's socket, in the temporary directory: this and
/// the process id.
const SOCKET_PREFIX: &str = "layerscope-fuzz-nbd-";

/// Removes the sockets of [`script_server`]s whose process is gone: the
/// server lives as long as its process and its socket stays behind (a
/// test run left one in /tmp per run).
fn remove_stale_sockets(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(pid) = name
            .strip_prefix(SOCKET_PREFIX)
            .and_then(|rest| rest.strip_suffix(".sock"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The scripted server of [`nbd_server`]: one per process, on a socket in
/// the temporary directory.
struct ScriptServer {
    path: String,
    script: std::sync::Mutex<Arc<[u8]>>,
}

fn script_server() -> Option<&'static ScriptServer> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    static SERVER: std::sync::OnceLock<Option<&'static ScriptServer>> = std::sync::OnceLock::new();
    *SERVER.get_or_init(|| {
        let dir = std::env::temp_dir();
        remove_stale_sockets(&dir);
        let path = dir
            .join(format!("{SOCKET_PREFIX}{}.sock", std::process::id()))
            .to_string_lossy()
            .into_owned();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).ok()?;
        let server: &'static ScriptServer = Box::leak(Box::new(ScriptServer {
            path,
            script: std::sync::Mutex::new(Arc::from(&[][..])),
        }));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else {
                    continue;
                };
                let script = server.script.lock().map(|s| s.clone()).ok();
                std::thread::spawn(move || {
                    let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(2)));
                    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                    if let Some(s) = script {
                        let _ = conn.write_all(&s);
                    }
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                    let mut sink = [0u8; 4096];
                    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
        });
        Some(server)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sockets_of_processes_gone_are_removed() {
        let dir = std::env::temp_dir().join(format!("layerscope-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gone = dir.join(format!("{}{}.sock", super::SOCKET_PREFIX, i32::MAX));
        let alive = dir.join(format!(
            "{}{}.sock",
            super::SOCKET_PREFIX,
            std::process::id()
        ));
        let other = dir.join("unrelated-1.sock");
        for p in [&gone, &alive, &other] {
            std::fs::write(p, b"").unwrap();
        }
        super::remove_stale_sockets(&dir);
        assert!(!gone.exists() && alive.exists() && other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
