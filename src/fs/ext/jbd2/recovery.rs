//! Recovery as the kernel does it (`fs/jbd2/recovery.c`), computed over
//! the [`super::walk`] of the log instead of written to the disk:
//!
//! - PASS_SCAN finds the end: the first transaction without a valid
//!   commit. A commit whose checksum fails ends the log there (and, with
//!   synchronous commits, makes the kernel refuse the mount after
//!   replaying what came before); a descriptor or revoke block whose
//!   checksum fails is tolerated until the next commit, whose time says
//!   whether it is stale (end quietly) or corrupt (recovery fails).
//! - PASS_REVOKE gathers the revoke records of the transactions to
//!   replay, keeping the latest transaction revoking each block.
//! - PASS_REPLAY says, for each tag of those transactions in log order,
//!   whether its copy lands on the filesystem: not when a later (or the
//!   same) transaction revoked the block, not when its tag checksum fails
//!   (the mount then fails too), and a later copy replaces an earlier.
//!
//! The result is a map from filesystem block to the journal block whose
//! bytes it holds after recovery ([`Recovery::replay`]), with the fate of
//! every tag for the `journal` listing.
use std::collections::{BTreeMap, HashMap};

use super::log::Log;
use super::walk::{End, Record, Walk};
use super::{checksum, feature, tid_geq, Geometry};

/// What recovery makes of a journal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to replay.
    Clean,
    /// Replayed; the kernel mounts.
    Replayed,
    /// Replayed, but the kernel then refuses the mount (`why`): a corrupt
    /// commit in the middle of the log, a logged block whose checksum
    /// fails. What was replayed is what the disk holds after the attempt.
    ReplayedThenRefused { why: String },
    /// The kernel's recovery fails before replaying anything (`why`); the
    /// filesystem stays as it is on disk.
    Failed { why: String },
}

/// Where a replayed filesystem block's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// The journal block holding the copy.
    pub journal_block: u64,
    /// The transaction that logged it.
    pub sequence: u32,
    /// The copy's first four bytes were the journal magic, escaped in the
    /// log: put back on replay.
    pub escaped: bool,
}

/// What became of one logged block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Written by replay (possibly replaced by a later copy).
    Replayed,
    /// Revoked by this or a later transaction.
    Revoked,
    /// Its tag checksum fails: not written.
    BadChecksum,
    /// Its journal block cannot be read.
    Unreadable,
    /// It names a block outside the filesystem.
    OutsideFilesystem,
    /// Its transaction is not replayed (no valid commit, or recovery
    /// failed, or the journal is clean).
    NotReplayed,
}

/// The result of recovery.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Recovery {
    pub geometry: Geometry,
    /// The filesystem says it needs recovery and the log has a start.
    pub needed: bool,
    pub walk: Walk,
    /// The first transaction not replayed (`info->end_transaction`).
    pub end_transaction: u32,
    pub outcome: Outcome,
    /// Filesystem block -> its replayed copy (the last one written).
    #[serde(skip)]
    pub replay: BTreeMap<u64, Replayed>,
    /// The fate of each tag, by (record index, tag index).
    #[serde(skip)]
    pub fates: HashMap<(usize, usize), Fate>,
    /// Transactions replayed.
    pub transactions: u32,
    /// Tags written (counting a block each time it is written).
    pub replays: u64,
    /// Revoke records read, and tags they cancelled.
    pub revokes: u64,
    pub revoke_hits: u64,
    /// Things a person should know, one line each.
    pub notes: Vec<String>,
}

impl Recovery {
    /// Filesystem blocks the replay changes.
    pub fn blocks(&self) -> usize {
        self.replay.len()
    }

    /// The fate of tag `tag` of record `record`.
    pub fn fate(&self, record: usize, tag: usize) -> Fate {
        self.fates
            .get(&(record, tag))
            .copied()
            .unwrap_or(Fate::NotReplayed)
    }
}

/// Why the scan stopped (or failed).
enum ScanEnd {
    /// The end of the valid log: transactions before `end` replay.
    End(u32),
    /// Recovery fails.
    Fail(String),
}

/// PASS_SCAN over the walk.
fn scan(geo: &Geometry, log: &Log, walk: &Walk, notes: &mut Vec<String>) -> (ScanEnd, Option<u32>) {
    let mut need_check_commit_time = false;
    let mut last_commit_time = 0u64;
    let mut end: Option<u32> = None;
    let mut failed_commit = None;
    let mut crc = !0u32;
    let v1 = geo.csum_v1();
    let asynchronous = geo.has_incompat(feature::INCOMPAT_ASYNC_COMMIT);
    for r in &walk.records {
        match r {
            Record::Descriptor { at, tail, data, .. } => {
                if tail.is_some_and(|c| !c.ok()) {
                    // PASS_SCAN can see stale blocks (lazy journal init).
                    need_check_commit_time = true;
                    notes.push(format!(
                        "descriptor block at journal block {at}: checksum does not match"
                    ));
                }
                if v1 && !need_check_commit_time && end.is_none() {
                    // calc_chksums: the descriptor, then each data block.
                    match log.read(*at) {
                        Ok(b) => crc = checksum::crc32_be(crc, &b),
                        Err(_) => return (ScanEnd::End(r.sequence()), failed_commit),
                    }
                    for &d in data {
                        match log.read(d) {
                            Ok(b) => crc = checksum::crc32_be(crc, &b),
                            Err(e) => {
                                notes.push(format!("journal block {d} cannot be read ({e}): the log ends before transaction {}", r.sequence()));
                                return (ScanEnd::End(r.sequence()), failed_commit);
                            }
                        }
                    }
                }
            }
            Record::Commit {
                at,
                sequence,
                commit,
                check,
            } => {
                let time = commit.sec;
                if need_check_commit_time {
                    if time >= last_commit_time {
                        return (
                            ScanEnd::Fail(format!(
                                "transaction {sequence} has a block whose checksum does not match (commit at journal block {at})"
                            )),
                            failed_commit,
                        );
                    }
                    notes.push(format!("transaction {sequence} looks stale (committed before the one before it): the log ends there"));
                    return (ScanEnd::End(*sequence), failed_commit);
                }
                let mut bad = false;
                if v1 {
                    if let Some(e) = end {
                        failed_commit = Some(e);
                        return (ScanEnd::End(e), failed_commit);
                    }
                    if !commit.v1_matches(crc) {
                        bad = true;
                        notes.push(format!(
                            "transaction {sequence}: commit checksum (v1) {:#010x} does not match the computed {crc:#010x}",
                            commit.chksum
                        ));
                    }
                    crc = !0;
                }
                if !bad && check.is_some_and(|c| !c.ok()) {
                    bad = true;
                    if let Some(c) = check {
                        notes.push(format!(
                            "transaction {sequence}: commit block checksum {:#010x} does not match the computed {:#010x} (journal block {at})",
                            c.stored, c.computed
                        ));
                    }
                }
                if bad {
                    if time < last_commit_time {
                        notes.push(format!("transaction {sequence} looks stale (committed before the one before it): the log ends there"));
                        return (ScanEnd::End(*sequence), failed_commit);
                    }
                    end = Some(*sequence);
                    if !asynchronous {
                        failed_commit = Some(*sequence);
                        return (ScanEnd::End(*sequence), failed_commit);
                    }
                }
                last_commit_time = time;
            }
            Record::Revoke { at, tail, .. } => {
                if tail.is_some_and(|c| !c.ok()) {
                    need_check_commit_time = true;
                    notes.push(format!(
                        "revoke block at journal block {at}: checksum does not match"
                    ));
                }
            }
        }
    }
    // The walk's end: a read error in the scan is a failed recovery.
    if let End::ReadError { at, error } = &walk.end {
        if end.is_none() {
            return (
                ScanEnd::Fail(format!("journal block {at} cannot be read: {error}")),
                failed_commit,
            );
        }
    }
    (
        ScanEnd::End(end.unwrap_or(walk.next_sequence)),
        failed_commit,
    )
}

/// Runs recovery over a walk. `needs_recovery` is the filesystem's
/// `needs_recovery` flag (without it the kernel wipes the log instead),
/// `fs_blocks` its block count.
pub fn recover(
    geo: &Geometry,
    log: &Log,
    walk: Walk,
    needs_recovery: bool,
    fs_blocks: u64,
    sb_checksum: Option<crate::fs::ext::checksum::Check>,
) -> Recovery {
    let mut r = Recovery {
        geometry: geo.clone(),
        needed: needs_recovery && geo.start != 0,
        end_transaction: geo.sequence,
        outcome: Outcome::Clean,
        replay: BTreeMap::new(),
        fates: HashMap::new(),
        transactions: 0,
        replays: 0,
        revokes: 0,
        revoke_hits: 0,
        notes: Vec::new(),
        walk,
    };
    if geo.start == 0 {
        return r;
    }
    if !needs_recovery {
        r.notes.push(format!(
            "the journal has a log (from block {}, transaction {}) but the filesystem does not need recovery: the kernel discards it",
            geo.start, geo.sequence
        ));
        return r;
    }
    if let Some(why) = refusal(geo, log, sb_checksum) {
        // Where the structure is, so the bytes can be looked at.
        let at = match log.offset(0) {
            Ok(o) => format!(
                " (journal superblock at byte {o:#x} of {})",
                log.source.name()
            ),
            Err(_) => " (journal superblock)".to_owned(),
        };
        r.outcome = Outcome::Failed {
            why: format!("{why}{at}"),
        };
        return r;
    }
    let mut notes = Vec::new();
    if matches!(r.walk.end, End::Loop { .. } | End::ReadError { .. }) {
        notes.push(r.walk.end.describe());
    }
    let (end, failed_commit) = scan(geo, log, &r.walk, &mut notes);
    r.notes.append(&mut notes);
    let end = match end {
        ScanEnd::End(e) => e,
        ScanEnd::Fail(why) => {
            r.outcome = Outcome::Failed { why };
            return r;
        }
    };
    r.end_transaction = end;
    let replayed = |seq: u32| !tid_geq(seq, end);
    // PASS_REVOKE.
    let mut revoked: HashMap<u64, u32> = HashMap::new();
    for rec in &r.walk.records {
        if let Record::Revoke {
            at,
            sequence,
            revokes,
            ..
        } = rec
        {
            if !replayed(*sequence) {
                break;
            }
            if revokes.count_past_block {
                r.outcome = Outcome::Failed {
                    why: format!(
                        "revoke block at journal block {at} (transaction {sequence}) says it uses {} bytes, more than its block holds",
                        revokes.r_count
                    ),
                };
                return r;
            }
            for &b in &revokes.blocks {
                r.revokes = r.revokes.saturating_add(1);
                let e = revoked.entry(b).or_insert(*sequence);
                if super::tid_gt(*sequence, *e) {
                    *e = *sequence;
                }
            }
        }
    }
    // PASS_REPLAY.
    let mut problems: Vec<String> = Vec::new();
    let mut refused = None;
    'records: for (i, rec) in r.walk.records.iter().enumerate() {
        if !replayed(rec.sequence()) {
            break;
        }
        match rec {
            Record::Commit { .. } => r.transactions = r.transactions.saturating_add(1),
            Record::Revoke { .. } => {}
            Record::Descriptor {
                at,
                sequence,
                tags,
                data,
                tail,
            } => {
                if tail.is_some_and(|c| !c.ok()) {
                    refused = Some(format!(
                        "descriptor block at journal block {at} (transaction {sequence}): checksum does not match"
                    ));
                    break 'records;
                }
                for (k, (tag, &jblock)) in tags.iter().zip(data).enumerate() {
                    let fate = replay_one(
                        geo,
                        log,
                        &revoked,
                        *sequence,
                        tag,
                        jblock,
                        fs_blocks,
                        &mut problems,
                    );
                    if fate == Fate::Replayed {
                        r.replays = r.replays.saturating_add(1);
                        r.replay.insert(
                            tag.block,
                            Replayed {
                                journal_block: jblock,
                                sequence: *sequence,
                                escaped: tag.escaped(),
                            },
                        );
                    } else if fate == Fate::Revoked {
                        r.revoke_hits = r.revoke_hits.saturating_add(1);
                    }
                    r.fates.insert((i, k), fate);
                }
            }
        }
    }
    let bad_blocks = r
        .fates
        .values()
        .any(|f| matches!(f, Fate::BadChecksum | Fate::Unreadable));
    r.notes.extend(problems);
    r.outcome = if let Some(why) = refused {
        Outcome::ReplayedThenRefused { why }
    } else if let Some(t) = failed_commit {
        Outcome::ReplayedThenRefused {
            why: format!("transaction {t} is corrupt (its commit block's checksum does not match)"),
        }
    } else if bad_blocks {
        Outcome::ReplayedThenRefused {
            why: "logged blocks that could not be read or whose checksums do not match were not written".into(),
        }
    } else {
        Outcome::Replayed
    };
    r
}

/// The fate of one tag in PASS_REPLAY.
#[allow(clippy::too_many_arguments)]
fn replay_one(
    geo: &Geometry,
    log: &Log,
    revoked: &HashMap<u64, u32>,
    sequence: u32,
    tag: &super::descriptor::Tag,
    jblock: u64,
    fs_blocks: u64,
    problems: &mut Vec<String>,
) -> Fate {
    if revoked
        .get(&tag.block)
        .is_some_and(|&r| tid_geq(r, sequence))
    {
        return Fate::Revoked;
    }
    if tag.block >= fs_blocks {
        problems.push(format!(
            "transaction {sequence}: journal block {jblock} is logged for block {}, outside the filesystem ({fs_blocks} blocks): not written",
            tag.block
        ));
        return Fate::OutsideFilesystem;
    }
    if geo.csum_v2or3() {
        let data = match log.read(jblock) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("transaction {sequence}: journal block {jblock} cannot be read ({e}): block {} not written", tag.block));
                return Fate::Unreadable;
            }
        };
        let stored = tag.checksum.unwrap_or(0);
        if checksum::tag(geo, sequence, &data, stored).is_some_and(|c| !c.ok()) {
            problems.push(format!(
                "transaction {sequence}: the copy of block {} in journal block {jblock} fails its tag checksum: not written",
                tag.block
            ));
            return Fate::BadChecksum;
        }
    } else if let Err(e) = log.offset(jblock) {
        problems.push(format!("transaction {sequence}: journal block {jblock} cannot be read ({e}): block {} not written", tag.block));
        return Fate::Unreadable;
    }
    Fate::Replayed
}

/// Why the kernel would not even try: a journal it cannot load.
/// (`journal_get_superblock` and `jbd2_journal_load`.)
fn refusal(
    geo: &Geometry,
    log: &Log,
    sb_checksum: Option<crate::fs::ext::checksum::Check>,
) -> Option<String> {
    if geo.has_incompat(feature::INCOMPAT_CSUM_V2) && geo.has_incompat(feature::INCOMPAT_CSUM_V3) {
        return Some("the journal has both checksum v2 and v3: the kernel cannot load it".into());
    }
    if geo.csum_v2or3() && geo.csum_v1() {
        return Some(
            "the journal has checksum v1 and v2/v3 at once: the kernel cannot load it".into(),
        );
    }
    if geo.csum_v2or3() && geo.checksum_type != 4 {
        return Some(format!(
            "the journal's checksum type is {}, not crc32c: the kernel cannot load it",
            geo.checksum_type
        ));
    }
    if let Some(c) = sb_checksum.filter(|c| !c.ok()) {
        return Some(format!(
            "the journal superblock's checksum {:#010x} does not match the computed {:#010x}: the kernel cannot load it",
            c.stored, c.computed
        ));
    }
    if geo.block_size != log.block_size {
        return Some(format!(
            "the journal's block size ({}) is not the filesystem's ({}): the kernel cannot load it",
            geo.block_size, log.block_size
        ));
    }
    if geo.maxlen > log.total {
        return Some(format!(
            "the journal superblock says {} blocks (s_maxlen), but the journal has {}: the kernel cannot load it",
            geo.maxlen, log.total
        ));
    }
    if geo.first == 0
        || geo.first >= geo.maxlen
        || geo.start < geo.first
        || geo.start >= geo.wrap_at()
    {
        return Some(format!(
            "the journal superblock's log bounds are impossible (first {}, start {}, {} blocks)",
            geo.first, geo.start, geo.maxlen
        ));
    }
    let unknown = geo.incompat & !0x3f;
    if unknown != 0 {
        return Some(format!(
            "the journal has incompatible features the kernel does not know ({unknown:#x})"
        ));
    }
    None
}
