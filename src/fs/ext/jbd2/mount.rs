//! Opening a filesystem the way the kernel mounts it: when the
//! filesystem needs recovery, the journal is replayed in memory and the
//! filesystem is read through the [`ReplayedSource`]; [`Mount::no_replay`]
//! reads it as it is on disk.
use std::sync::Arc;

use crate::block::origin::Origin;
use crate::block::BlockSource;
use crate::fs::ext::superblock::{sb, Compat, Incompat};
use crate::fs::ext::{Ext4, FsError};

use super::log::{Layout, Log};
use super::recovery::{self, Recovery};
use super::replay::{ReplayInfo, ReplayedSource};
use super::{walk, Geometry};

/// `EXT3_FEATURE_INCOMPAT_RECOVER`: the filesystem was not unmounted
/// cleanly (or is mounted) and its journal may hold changes.
pub const INCOMPAT_RECOVER: u32 = 0x4;
/// `EXT3_FEATURE_INCOMPAT_JOURNAL_DEV`: this is a journal device.
pub const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
/// `EXT3_FEATURE_COMPAT_HAS_JOURNAL`.
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;

/// How to open a filesystem.
#[derive(Clone, Default)]
pub struct Mount {
    /// Read the filesystem as it is on disk, without replaying its
    /// journal.
    pub no_replay: bool,
    /// Where the volume sits in the chain's layers: replayed blocks are
    /// then recorded in the hit map as served by their layer's journal.
    pub origin: Option<Arc<dyn Origin>>,
    /// The journal device of a filesystem with an external journal.
    pub journal_dev: Option<Arc<dyn BlockSource>>,
}

/// The journal of a filesystem, ready to walk.
pub struct Journal {
    pub geometry: Geometry,
    pub log: Log,
    /// The journal superblock's bytes (1024).
    pub superblock: Vec<u8>,
}

impl Ext4 {
    /// Opens the filesystem at the start of `source` as the kernel would
    /// mount it (see [`Mount`]).
    ///
    /// # Errors
    /// As [`Ext4::open`]; a journal that cannot be replayed is not an
    /// error (the filesystem is read as it is on disk, and
    /// [`Ext4::replay_info`] says why).
    pub fn open_with(source: Arc<dyn BlockSource>, mount: &Mount) -> Result<Ext4, FsError> {
        let fs = Ext4::open_on_disk(source)?;
        if mount.no_replay
            || !fs.sb.has_incompat(Incompat::NEEDS_RECOVERY)
            || fs.sb.has_incompat(Incompat::JOURNAL_DEV)
        {
            return Ok(fs);
        }
        let journal = match fs.journal_log(mount.journal_dev.clone()) {
            Ok(Some(j)) => j,
            Ok(None) => return Ok(fs),
            Err(e) => {
                let mut fs = fs;
                fs.replay_failed = Some(format!("the journal cannot be read: {e}"));
                return Ok(fs);
            }
        };
        let r = fs.recover(&journal);
        if r.replay.is_empty() {
            let mut fs = fs;
            fs.replay_info = Some(Arc::new(ReplayInfo::of(&r)));
            return Ok(fs);
        }
        let log = journal.log.clone();
        let offset = |n: u64| log.offset(n).ok();
        let volume = Arc::clone(fs.disk.inner());
        let replayed = ReplayedSource::new(
            Arc::clone(&volume),
            Arc::clone(&journal.log.source),
            &r,
            &offset,
            fs.sb.block_size,
            mount.origin.clone(),
        )?;
        let replayed = Arc::new(replayed);
        let mut out = Ext4::open_on_disk(replayed_source(&replayed))?;
        out.replay_info = Some(Arc::new(replayed.info().clone()));
        out.replayed = Some(replayed);
        Ok(out)
    }

    /// The journal: the internal one (its inode's map), this volume when
    /// it is a journal device, or `journal_dev` for an external journal.
    /// `None` without a journal.
    ///
    /// # Errors
    /// The journal inode or superblock cannot be read; an external
    /// journal not given.
    pub fn journal_log(
        &self,
        journal_dev: Option<Arc<dyn BlockSource>>,
    ) -> Result<Option<Journal>, FsError> {
        let sb = &self.sb;
        let bs = sb.block_size;
        if sb.has_incompat(Incompat::JOURNAL_DEV) {
            let start = u64::from(sb.first_data_block).saturating_add(1);
            return journal_on_device(Arc::clone(self.disk.inner()), start, bs).map(Some);
        }
        if !sb.has_compat(Compat::HAS_JOURNAL) {
            return Ok(None);
        }
        let ino = sb.get(sb!("s_journal_inum"));
        if ino == 0 {
            let Some(dev) = journal_dev else {
                return Err(FsError::Unsupported {
                    what: "the journal is on an external device (give it with --journal-dev)"
                        .into(),
                });
            };
            // The device's own superblock says where its journal starts.
            let dfs = Ext4::open_on_disk(Arc::clone(&dev))?;
            if !dfs.sb.has_incompat(Incompat::JOURNAL_DEV) {
                return Err(FsError::corrupt(
                    "journal device",
                    "s_feature_incompat",
                    0,
                    format!("{} is not a journal device", dev.name()),
                ));
            }
            if crate::fs::ext::journal::uuid_text(&dfs.sb.uuid) != sb.text(sb!("s_journal_uuid")) {
                return Err(FsError::corrupt(
                    "journal device",
                    "s_uuid",
                    0,
                    format!("{} is not this filesystem's journal (its UUID differs from s_journal_uuid)", dev.name()),
                ));
            }
            let start = u64::from(dfs.sb.first_data_block).saturating_add(1);
            return journal_on_device(dev, start, dfs.sb.block_size).map(Some);
        }
        let inode = self.inode(ino)?;
        let map = self.block_map(&inode)?;
        let mut runs: Vec<_> = map.runs.into_iter().filter(|r| !r.meta).collect();
        runs.sort_by_key(|r| r.logical);
        let total = inode.size.checked_div(bs).unwrap_or(0);
        let log = Log {
            source: Arc::clone(self.disk.inner()),
            layout: Layout::Inode { ino, runs },
            block_size: bs,
            total,
        };
        let raw = log.read(0)?;
        let geometry = Geometry::decode(&raw).ok_or_else(|| {
            FsError::corrupt(
                "journal superblock",
                "h_magic",
                log.offset(0).unwrap_or(0),
                format!("journal inode {ino}'s first block is not a journal superblock"),
            )
        })?;
        Ok(Some(Journal {
            geometry,
            log,
            superblock: raw.get(..1024).unwrap_or_default().to_vec(),
        }))
    }

    /// Recovery of `journal` as the kernel would run it on this
    /// filesystem (read as it is on disk).
    pub fn recover(&self, journal: &Journal) -> Recovery {
        let w = walk::walk(&journal.geometry, &journal.log);
        let needs = self.sb.has_incompat(Incompat::NEEDS_RECOVERY);
        let sb_check = super::checksum::superblock(&journal.geometry, &journal.superblock);
        recovery::recover(
            &journal.geometry,
            &journal.log,
            w,
            needs,
            self.sb.blocks_count,
            sb_check,
        )
    }

    /// What the journal replay did, when the filesystem needed recovery
    /// and was opened replaying it. `None` when it was clean (or opened
    /// with `no_replay`).
    pub fn replay_info(&self) -> Option<&Arc<ReplayInfo>> {
        self.replay_info.as_ref()
    }

    /// The replayed view this filesystem reads, when its journal was
    /// replayed.
    pub fn replayed(&self) -> Option<&Arc<ReplayedSource>> {
        self.replayed.as_ref()
    }

    /// Why a journal that needed recovery could not even be read.
    pub fn replay_failed(&self) -> Option<&str> {
        self.replay_failed.as_deref()
    }

    /// One line for the user when the view differs from the disk (or
    /// could not be made to): `None` for a clean filesystem.
    pub fn replay_note(&self) -> Option<String> {
        if let Some(why) = &self.replay_failed {
            return Some(format!(
                "the filesystem needs recovery, but {why}: showing it as it is on disk"
            ));
        }
        let info = self.replay_info.as_ref()?;
        let mut s = info.summary();
        if info.transactions > 0 && self.replayed.is_some() {
            s.push_str(" (--no-replay for the on-disk view)");
        }
        Some(s)
    }
}

/// A journal on a device whose journal block 0 is device block `start`.
fn journal_on_device(
    dev: Arc<dyn BlockSource>,
    start: u64,
    block_size: u64,
) -> Result<Journal, FsError> {
    let bs = block_size.max(1);
    let total = dev.len().checked_div(bs).unwrap_or(0).saturating_sub(start);
    let log = Log {
        source: dev,
        layout: Layout::Device { start },
        block_size: bs,
        total,
    };
    let raw = log.read(0)?;
    let geometry = Geometry::decode(&raw).ok_or_else(|| {
        FsError::corrupt(
            "journal superblock",
            "h_magic",
            log.offset(0).unwrap_or(0),
            "no journal superblock on the journal device",
        )
    })?;
    Ok(Journal {
        geometry,
        log,
        superblock: raw.get(..1024).unwrap_or_default().to_vec(),
    })
}

/// The replayed view as a plain block source.
fn replayed_source(r: &Arc<ReplayedSource>) -> Arc<dyn BlockSource> {
    Arc::<ReplayedSource>::clone(r)
}
