//! The image side of `check` for qcow2 layers: what `qemu-img check`
//! reports, computed the same way (qemu's `block/qcow2-refcount.c`,
//! `qcow2_check_refcounts`), read-only.
//!
//! Every cluster the metadata references (the header, L1 and L2 tables,
//! data and compressed clusters, the snapshot table and snapshots' L1/L2
//! tables, the refcount table and blocks, persistent bitmaps) is counted;
//! the counts are compared with the refcounts stored in the file. More
//! stored than referenced is a leak (wasted space); fewer is a corruption
//! (a cluster used twice: two structures overlap, and the next write to
//! one destroys the other), and those clusters are explained by naming
//! every structure that references them. `OFLAG_COPIED` flags are checked
//! against the refcounts, and L1/L2 entries for reserved bits, alignment
//! and subcluster bitmaps, with qemu's messages' facts.
//!
//! Memory: one 16-bit counter per cluster of a window of the file, at most
//! [`WINDOW_CLUSTERS`] at once; a larger file is counted window by window
//! (the metadata walked once per window), so memory stays bounded whatever
//! the file's size.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

use super::bits::Bits;
use super::{Problem, Problems, Progress, Severity};
use crate::block::qcow2::header::Header;
use crate::block::qcow2::l2::compressed_location;
use crate::block::qcow2::Qcow2Layer;
use crate::block::storage::Storage;

mod compare;
mod tables;
mod walk;

use tables::{be64, Bitmap, Refcounts, Snapshot};

/// Clusters counted at once (64 MiB of counters).
pub const WINDOW_CLUSTERS: u64 = 32 << 20;
/// log2 of the clusters one bit of [`Checker::touched`] stands for.
const TOUCH_SHIFT: u32 = 12;
/// Clusters referenced too often whose referrers are named, at most.
const MAX_EXPLAINED: usize = 1000;
/// Referrers named per cluster, at most.
const MAX_REFERRERS: usize = 8;
/// qemu's limits: refcount table, L1 table (the snapshot table's and the
/// bitmap directory's are `block::qcow2`'s, whose readers check uses).
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_L1_BYTES: u64 = 32 << 20;

const OFLAG_COPIED: u64 = 1 << 63;
const OFLAG_COMPRESSED: u64 = 1 << 62;
const OFLAG_ZERO: u64 = 1;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1E_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
const L2E_STD_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
const REFT_RESERVED_MASK: u64 = 0x1ff;
const L2_BITMAP_ALL_ALLOC: u64 = 0xffff_ffff;
const BME_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const BME_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
const BME_FLAG_ALL_ONES: u64 = 1;

/// What `qemu-img check --output=json` reports for one image, and the
/// problems behind its counts.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LayerCheck {
    /// Position in the chain (0 is the base).
    pub layer: usize,
    pub filename: String,
    pub format: String,
    pub check_errors: u64,
    pub leaks: u64,
    pub corruptions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_end_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_clusters: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_clusters: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragmented_clusters: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed_clusters: Option<u64>,
    /// Why some of the check could not be done (an unreadable table).
    pub errors: Vec<String>,
    #[serde(skip)]
    pub problems: Problems,
}

/// Who references a cluster (named when a cluster is referenced too
/// often).
#[derive(Clone, Debug)]
///
/// Names are shared (`Arc<str>`), not copied: a `Who` is made for every
/// entry of every table, and a snapshot's name may be 64 KiB.
enum Who {
    Header,
    L1 {
        snapshot: Option<Arc<str>>,
    },
    L2 {
        l1_index: u64,
        snapshot: Option<Arc<str>>,
    },
    Data {
        guest: u64,
        snapshot: Option<Arc<str>>,
    },
    Compressed {
        guest: u64,
        snapshot: Option<Arc<str>>,
    },
    SnapshotTable,
    RefcountTable,
    RefcountBlock {
        index: u64,
    },
    BitmapDirectory,
    BitmapTable {
        name: Arc<str>,
    },
    BitmapData {
        name: Arc<str>,
        index: u64,
    },
}

impl Who {
    fn describe(&self) -> String {
        let of = |s: &Option<Arc<str>>| match s {
            Some(n) => format!(" of snapshot {n}"),
            None => String::new(),
        };
        match self {
            Who::Header => "the header".into(),
            Who::L1 { snapshot } => format!("the L1 table{}", of(snapshot)),
            Who::L2 { l1_index, snapshot } => {
                format!("the L2 table of L1 entry {l1_index}{}", of(snapshot))
            }
            Who::Data { guest, snapshot } => {
                format!("data at guest offset {guest:#x}{}", of(snapshot))
            }
            Who::Compressed { guest, snapshot } => {
                format!("compressed data at guest offset {guest:#x}{}", of(snapshot))
            }
            Who::SnapshotTable => "the snapshot table".into(),
            Who::RefcountTable => "the refcount table".into(),
            Who::RefcountBlock { index } => format!("refcount block {index}"),
            Who::BitmapDirectory => "the bitmap directory".into(),
            Who::BitmapTable { name } => format!("the table of bitmap {name:?}"),
            Who::BitmapData { name, index } => {
                format!("bitmap {name:?} data (table entry {index})")
            }
        }
    }
}

/// What a problem in a table named `n` times says of its count (nothing
/// for a table named once).
fn counted(n: u64) -> String {
    if n > 1 {
        format!(" (counted {n} times: the table is named {n} times)")
    } else {
        String::new()
    }
}

/// Checks one qcow2 layer the way `qemu-img check` does.
pub fn check(layer: usize, q: &Qcow2Layer, progress: &dyn Progress) -> LayerCheck {
    let mut c = Checker::new(layer, q);
    c.run(progress);
    c.finish()
}

struct Checker<'a> {
    layer: usize,
    path: String,
    storage: &'a dyn Storage,
    h: &'a Header,
    cluster_bits: u32,
    cluster_size: u64,
    file_len: u64,
    /// Clusters counted: the file's, plus one past its end (qemu lets the
    /// last cluster be partly past the end).
    nb_clusters: u64,
    /// Emit problems from the walk (the first window only: later windows
    /// walk the same metadata again).
    first_pass: bool,
    window: Range<u64>,
    counts: Vec<u16>,
    /// Counts of [`u16::MAX`] or more (`counts` holds [`u16::MAX`] there):
    /// refcounts may be 32 or 64 bits wide, and one table named by
    /// millions of L1 entries counts each of its clusters that often.
    big: HashMap<usize, u64>,
    /// Clusters of the window referenced past what their refcounts can
    /// count: who went over first, and by how many references (one
    /// problem per cluster, counted once per reference over, as qemu
    /// counts them).
    overflows: std::collections::BTreeMap<u64, (String, u64)>,
    /// One bit per 4096 clusters of the window: set where a count is.
    /// Where refcount blocks are absent only counted clusters matter, and
    /// the counts of a sparse file of terabytes are mostly zeros that a
    /// scan would page in for nothing.
    touched: Bits,
    /// The highest cluster any reference names (known after the first
    /// walk): windows past it hold no counts, so they are not walked.
    max_ref: Option<u64>,
    /// Where counts are wanted for explanations: cluster → referrers.
    explain: Option<std::collections::BTreeMap<u64, Vec<String>>>,
    refcount_max: u64,
    out: LayerCheck,
    /// Per-L2-table next contiguous host offset (fragmentation).
    next_contiguous: u64,
    snapshots: Vec<Snapshot>,
    snapshots_size: u64,
    bitmaps: Vec<Bitmap>,
    bitmap_directory: Option<(u64, u64)>,
    refcounts: Option<Refcounts>,
    /// The last cluster in use (stored or counted).
    highest: u64,
}

impl<'a> Checker<'a> {
    fn new(layer: usize, q: &'a Qcow2Layer) -> Checker<'a> {
        let h = q.header();
        let storage = q.storage().as_ref();
        let cluster_bits = h.cluster_bits;
        let cluster_size = h.cluster_size();
        let file_len = storage.len();
        let nb_clusters = file_len.div_ceil(cluster_size.max(1)).saturating_add(1);
        let bits = h.refcount_bits();
        let refcount_max = 1u64
            .checked_shl(bits)
            .map_or(u64::MAX, |m| m.saturating_sub(1));
        let path = crate::block::BlockSource::name(q).to_owned();
        Checker {
            layer,
            storage,
            h,
            cluster_bits,
            cluster_size,
            file_len,
            nb_clusters,
            first_pass: true,
            window: 0..0,
            counts: Vec::new(),
            big: HashMap::new(),
            overflows: std::collections::BTreeMap::new(),
            touched: Bits::default(),
            max_ref: None,
            explain: None,
            refcount_max,
            out: LayerCheck {
                layer,
                filename: path.clone(),
                format: "qcow2".into(),
                total_clusters: Some(h.size.div_ceil(cluster_size.max(1))),
                ..LayerCheck::default()
            },
            path,
            next_contiguous: 0,
            snapshots: Vec::new(),
            snapshots_size: 0,
            bitmaps: Vec::new(),
            bitmap_directory: None,
            refcounts: None,
            highest: 0,
        }
    }

    fn finish(self) -> LayerCheck {
        self.out
    }

    fn problem(
        &mut self,
        severity: Severity,
        kind: &'static str,
        structure: String,
        offset: Option<u64>,
        detail: String,
    ) {
        self.problem_n(severity, kind, structure, offset, detail, 1);
    }

    /// One problem listed, counted `n` times (qemu counts it once per
    /// reference; a table named `n` times is walked once here).
    fn problem_n(
        &mut self,
        severity: Severity,
        kind: &'static str,
        structure: String,
        offset: Option<u64>,
        detail: String,
        n: u64,
    ) {
        if severity == Severity::Leak {
            self.out.leaks = self.out.leaks.saturating_add(n);
        } else {
            self.out.corruptions = self.out.corruptions.saturating_add(n);
        }
        self.out.problems.push(Problem::in_file(
            self.layer, severity, kind, structure, offset, detail,
        ));
    }

    /// A problem found while walking the metadata (reported once).
    fn walk_problem(
        &mut self,
        kind: &'static str,
        structure: String,
        offset: Option<u64>,
        detail: String,
    ) {
        self.walk_problem_n(kind, structure, offset, detail, 1);
    }

    /// A problem in a table that `n` references name: listed once,
    /// counted `n` times, as qemu counts it walking the table per
    /// reference.
    fn walk_problem_n(
        &mut self,
        kind: &'static str,
        structure: String,
        offset: Option<u64>,
        detail: String,
        n: u64,
    ) {
        if self.first_pass && self.explain.is_none() {
            let detail = format!("{detail}{}", counted(n));
            self.problem_n(Severity::Error, kind, structure, offset, detail, n);
        }
    }

    fn check_error(&mut self, what: String) {
        self.check_error_with(|| what);
    }

    /// As [`Checker::check_error`], the message made only while it is
    /// kept: a damaged refcount table fails for every cluster it covers,
    /// and formatting each message took a fuzzer's qcow2 most of its time.
    fn check_error_with(&mut self, what: impl FnOnce() -> String) {
        self.out.check_errors = self.out.check_errors.saturating_add(1);
        if self.out.errors.len() < 1000 {
            self.out.errors.push(what());
        }
    }

    /// Reads `len` bytes at `offset`; what lies past the end of the file
    /// reads as zeros (as qemu's file driver does).
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let n = usize::try_from(len).map_err(|_| format!("{len} bytes is too much to read"))?;
        let mut buf = vec![0u8; n];
        let avail = self.file_len.saturating_sub(offset).min(len);
        let avail = usize::try_from(avail).unwrap_or(0);
        if let Some(part) = buf.get_mut(..avail) {
            self.storage
                .read_exact_at(offset, part)
                .map_err(|e| format!("reading {len} bytes at {offset:#x}: {e}"))?;
        }
        Ok(buf)
    }

    fn run(&mut self, progress: &dyn Progress) {
        self.load_snapshots();
        self.load_bitmaps();
        self.load_refcounts();

        let mut start = 0u64;
        let mut tops: Vec<u64> = Vec::new();
        while start < self.nb_clusters {
            let end = start.saturating_add(WINDOW_CLUSTERS).min(self.nb_clusters);
            self.window = start..end;
            let n = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
            // Past the last referenced cluster every count is 0: the
            // stored refcounts are compared with nothing walked (a file
            // of terabytes with its metadata at the start costs one walk).
            let referenced = self.first_pass || self.max_ref.is_some_and(|m| m >= start);
            if referenced {
                self.counts = vec![0u16; n];
                self.big = HashMap::new();
                self.touched =
                    Bits::new(u64::try_from(n >> TOUCH_SHIFT).map_or(0, |c| c.saturating_add(1)));
                progress.stage(
                    &format!("layer {} ({}): references", self.layer, self.path),
                    u64::from(self.h.l1_size),
                );
                self.walk(progress);
                self.report_overflows();
            } else {
                self.counts = Vec::new();
                self.big = HashMap::new();
                self.touched = Bits::default();
            }
            tops.extend(self.compare());
            self.first_pass = false;
            start = end;
        }
        self.counts = Vec::new();
        self.big = HashMap::new();
        self.touched = Bits::default();
        if !tops.is_empty() {
            self.explain_clusters(&tops);
        }
        self.check_oflag_copied();
        self.out.image_end_offset = Some(self.image_end_offset());
    }

    /// Distinct L2 tables walked at most: as many as the file has
    /// clusters (a well-formed image cannot hold more; more distinct
    /// offsets are misaligned entries of a damaged one).
    fn distinct_tables_cap(&self) -> usize {
        usize::try_from(
            self.file_len
                .div_ceil(self.cluster_size.max(1))
                .saturating_add(1),
        )
        .unwrap_or(usize::MAX)
    }

    fn image_end_offset(&self) -> u64 {
        self.highest
            .saturating_add(1)
            .saturating_mul(self.cluster_size)
    }
}

impl Checker<'_> {
    /// The window's refcount overflows, one problem per cluster.
    fn report_overflows(&mut self) {
        for (k, (who, over)) in std::mem::take(&mut self.overflows) {
            let at = k.saturating_mul(self.cluster_size);
            let times = if over > 1 {
                format!(", {over} references over")
            } else {
                String::new()
            };
            self.problem_n(
                Severity::Error,
                "refcount-overflow",
                format!("cluster {k}"),
                Some(at),
                format!(
                    "referenced more often than {}-bit refcounts can count (first by {who}{times})",
                    self.h.refcount_bits(),
                ),
                over,
            );
        }
    }

    /// The window's count at `i`.
    fn count_at(&self, i: usize) -> u64 {
        match self.counts.get(i).copied() {
            Some(u16::MAX) => self.big.get(&i).copied().unwrap_or(u64::from(u16::MAX)),
            c => c.map_or(0, u64::from),
        }
    }

    fn set_count(&mut self, i: usize, v: u64) {
        let Some(c) = self.counts.get_mut(i) else {
            return;
        };
        match u16::try_from(v) {
            Ok(small) if small < u16::MAX => *c = small,
            _ => {
                *c = u16::MAX;
                self.big.insert(i, v);
            }
        }
        if v > 0 {
            let _ = self
                .touched
                .set(u64::try_from(i >> TOUCH_SHIFT).unwrap_or(u64::MAX));
        }
    }

    /// Counts one reference to every cluster of `[offset, offset + size)`
    /// (qemu's `qcow2_inc_refcounts_imrt`).
    fn inc(&mut self, offset: u64, size: u64, who: &Who) {
        self.inc_n(offset, size, who, 1);
    }

    /// Counts `n` references at once: a table that `n` L1 entries or
    /// snapshots name is walked once, its clusters counted `n` times.
    fn inc_n(&mut self, offset: u64, size: u64, who: &Who, n: u64) {
        if size == 0 || n == 0 {
            return;
        }
        let end = offset.checked_add(size);
        let limit = self.file_len.saturating_add(self.cluster_size);
        if end.is_none_or(|e| e >= limit) {
            self.walk_problem_n(
                "reference-past-eof",
                who.describe(),
                Some(offset),
                format!(
                    "references {offset:#x}+{size:#x}, one cluster or more past the end of the file ({} bytes)",
                    self.file_len
                ),
                n,
            );
            return;
        }
        let first = offset >> self.cluster_bits;
        let last = end.unwrap_or(offset).saturating_sub(1) >> self.cluster_bits;
        if self.explain.is_none() {
            self.max_ref = Some(self.max_ref.map_or(last, |m| m.max(last)));
        }
        // Only what a pass keeps is visited: the clusters being explained
        // in the range, or the range's part in the window (a table a
        // hostile header sizes at terabytes costs the window, not its
        // size, per pass).
        if let Some(explain) = self.explain.as_mut() {
            for (_, list) in explain.range_mut(first..=last) {
                if list.len() < MAX_REFERRERS {
                    list.push(if n > 1 {
                        format!("{} (×{n})", who.describe())
                    } else {
                        who.describe()
                    });
                }
            }
            return;
        }
        if self.window.is_empty() {
            return;
        }
        let mut k = first.max(self.window.start);
        let hi = last.min(self.window.end.saturating_sub(1));
        while k <= hi {
            let i = usize::try_from(k.saturating_sub(self.window.start)).unwrap_or(usize::MAX);
            let cur = self.count_at(i);
            let room = self.refcount_max.saturating_sub(cur);
            if n > room {
                let over = n.saturating_sub(room);
                let o = self
                    .overflows
                    .entry(k)
                    .or_insert_with(|| (who.describe(), 0));
                o.1 = o.1.saturating_add(over);
            }
            self.set_count(i, cur.saturating_add(n.min(room)));
            k = k.saturating_add(1);
        }
    }
}
