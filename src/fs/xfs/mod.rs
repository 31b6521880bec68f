//! XFS, read-only, v4 and v5 (CRC) filesystems, decoded from the bytes of a
//! [`BlockSource`].
//!
//! One module per on-disk structure, each a pure decoder over bytes with
//! one field table: [`superblock`], the allocation group headers [`agf`],
//! [`agi`] and [`agfl`], the B+tree blocks of [`btree`], inodes
//! ([`dinode`]), their block maps ([`bmbt`]), directories ([`dir2`]),
//! symlinks ([`symlink`]) and extended attributes ([`attr`]). [`Xfs`] reads
//! through a bounded [`BlockCache`] and hands the bytes to them; [`ag`]
//! sums up an allocation group for the groups listing, and [`filesystem`]
//! puts it all behind [`crate::fs::Filesystem`].
//!
//! Nothing trusts the disk: the geometry is checked once on open; every
//! block number is split into AG and AG block and checked against both
//! before it is read; every tree walk is bounded by levels that must go
//! down one at a time and by a set of the blocks already seen; CRCs are
//! checked and shown (stored and computed), never silently trusted or
//! refused.
//!
//! Not here: the log (its contents are not replayed), the realtime device
//! (realtime files are flagged, their bytes are on another device), quota
//! files' contents, and the in-memory-only CoW fork of reflinked files.
use std::sync::Arc;

use crate::block::cache::BlockCache;
use crate::block::BlockSource;
use crate::fs::FsError;

pub mod ag;
pub mod agf;
pub mod agfl;
pub mod agi;
mod ahead;
pub mod attr;
pub mod be;
pub mod bmbt;
pub mod btree;
pub mod crc;
pub mod da;
pub mod dinode;
pub mod dir2;
pub mod filesystem;
pub mod superblock;
pub mod symlink;

use agf::Agf;
use agfl::Agfl;
use agi::Agi;
use superblock::Superblock;

/// Cache for metadata reads.
const CACHE_BYTES: u64 = 32 << 20;

/// True when `sector` (the first bytes of a volume) starts with the XFS
/// superblock magic.
pub fn probe(sector: &[u8]) -> bool {
    be::u32_at(sector, 0) == Some(superblock::MAGIC)
}

/// An opened XFS filesystem.
pub struct Xfs {
    disk: BlockCache,
    sb: Superblock,
}

impl Xfs {
    /// Opens the filesystem at the start of `source`.
    ///
    /// # Errors
    /// `NotThisFs` without the XFS magic; `Corrupt` naming the superblock
    /// field for an impossible geometry; read errors.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Xfs, FsError> {
        let disk = BlockCache::new(source, CACHE_BYTES);
        let size = disk.len();
        let mut first = vec![0u8; superblock::SIZE];
        if size < be::u64_of(first.len()) {
            return Err(FsError::NotThisFs {
                fs: "XFS",
                detail: format!("the volume has only {size} bytes"),
            });
        }
        disk.read_at(0, &mut first)?;
        if !probe(&first) {
            return Err(FsError::NotThisFs {
                fs: "XFS",
                detail: "no XFSB magic at byte 0".to_owned(),
            });
        }
        let probe_sb = Superblock::decode(&first)?;
        // The CRC covers the whole sector.
        let sect = u64::from(probe_sb.sectsize).min(size);
        let mut sector = vec![0u8; be::us(sect)];
        disk.read_at(0, &mut sector)?;
        let mut sb = Superblock::decode(&sector)?;
        let fs_bytes = sb.dblocks.saturating_mul(sb.blocksize.into());
        if fs_bytes > size {
            sb.problems.push(format!(
                "the filesystem has {} blocks ({fs_bytes} bytes) but the volume only {size} bytes: the blocks past its end cannot be read",
                sb.dblocks
            ));
        }
        Ok(Xfs { disk, sb })
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The disk the filesystem is read from.
    pub fn disk(&self) -> &BlockCache {
        &self.disk
    }

    /// Bytes per block.
    pub fn block_bytes(&self) -> u64 {
        u64::from(self.sb.blocksize)
    }

    /// The disk offset of the start of AG `agno`.
    ///
    /// # Errors
    /// `Corrupt` for an AG the filesystem does not have.
    pub fn ag_offset(&self, agno: u32) -> Result<u64, FsError> {
        self.agb_offset(agno, 0)
    }

    /// The disk offset of block `agbno` of AG `agno`.
    ///
    /// # Errors
    /// `Corrupt` for an AG or block the filesystem does not have.
    pub fn agb_offset(&self, agno: u32, agbno: u32) -> Result<u64, FsError> {
        if agno >= self.sb.agcount || agbno >= self.sb.ag_length(agno) {
            return Err(FsError::corrupt(
                "block address",
                "agbno",
                0,
                format!(
                    "AG {agno} block {agbno} does not exist ({} AGs of {} blocks)",
                    self.sb.agcount, self.sb.agblocks
                ),
            ));
        }
        u64::from(agno)
            .checked_mul(self.sb.agblocks.into())
            .and_then(|b| b.checked_add(agbno.into()))
            .and_then(|b| b.checked_mul(self.block_bytes()))
            .ok_or_else(|| {
                FsError::corrupt(
                    "block address",
                    "agbno",
                    0,
                    format!("AG {agno} block {agbno} overflows"),
                )
            })
    }

    /// Splits a filesystem block number (`agno << agblklog | agbno`) into
    /// its AG and AG block, both checked.
    ///
    /// # Errors
    /// `Corrupt` for a block outside the filesystem.
    pub fn split_fsb(&self, fsb: u64) -> Result<(u32, u32), FsError> {
        let log = u32::from(self.sb.agblklog);
        let agno = fsb.checked_shr(log).unwrap_or(0);
        let agbno = fsb
            & 1u64
                .checked_shl(log)
                .map_or(u64::MAX, |m| m.saturating_sub(1));
        match (u32::try_from(agno), u32::try_from(agbno)) {
            (Ok(a), Ok(b)) if a < self.sb.agcount && b < self.sb.ag_length(a) => Ok((a, b)),
            _ => Err(FsError::corrupt(
                "block address",
                "fsbno",
                0,
                format!(
                    "block {fsb} (AG {agno} block {agbno}) is outside the filesystem ({} AGs of {} blocks)",
                    self.sb.agcount, self.sb.agblocks
                ),
            )),
        }
    }

    /// The disk offset of filesystem block `fsb`.
    ///
    /// # Errors
    /// As [`Xfs::split_fsb`].
    pub fn fsb_offset(&self, fsb: u64) -> Result<u64, FsError> {
        let (a, b) = self.split_fsb(fsb)?;
        self.agb_offset(a, b)
    }

    /// Reads `len` bytes at disk offset `at`, naming `structure` when they
    /// are past the end of the volume.
    ///
    /// # Errors
    /// `Corrupt` past the end of the volume; read errors.
    pub fn read_bytes(
        &self,
        at: u64,
        len: usize,
        structure: &'static str,
    ) -> Result<Vec<u8>, FsError> {
        let end = at.checked_add(be::u64_of(len));
        if end.is_none_or(|e| e > self.disk.len()) {
            return Err(FsError::corrupt(
                structure,
                "location",
                at,
                format!(
                    "{len} bytes at {at:#x} are past the end of the volume ({} bytes)",
                    self.disk.len()
                ),
            ));
        }
        let mut buf = vec![0u8; len];
        self.disk.read_at(at, &mut buf)?;
        Ok(buf)
    }

    /// Reads one filesystem block at disk offset `at`.
    ///
    /// # Errors
    /// As [`Xfs::read_bytes`].
    pub fn read_block_at(&self, at: u64, structure: &'static str) -> Result<Vec<u8>, FsError> {
        self.read_bytes(at, be::us(self.sb.blocksize), structure)
    }

    /// Sector `n` (0 superblock, 1 AGF, 2 AGI, 3 AGFL) of AG `agno`.
    fn ag_sector(
        &self,
        agno: u32,
        n: u64,
        structure: &'static str,
    ) -> Result<(Vec<u8>, u64), FsError> {
        let sect = u64::from(self.sb.sectsize);
        let at = self
            .ag_offset(agno)?
            .checked_add(n.saturating_mul(sect))
            .ok_or_else(|| FsError::corrupt(structure, "location", 0, "offset overflows"))?;
        Ok((self.read_bytes(at, be::us(sect), structure)?, at))
    }

    /// AG `agno`'s free space header.
    ///
    /// # Errors
    /// An AG that does not exist, a sector past the volume, a wrong magic.
    pub fn agf(&self, agno: u32) -> Result<Agf, FsError> {
        let (s, at) = self.ag_sector(agno, 1, "AGF")?;
        Agf::decode(&self.sb, agno, &s, at)
    }

    /// AG `agno`'s inode header.
    ///
    /// # Errors
    /// As [`Xfs::agf`].
    pub fn agi(&self, agno: u32) -> Result<Agi, FsError> {
        let (s, at) = self.ag_sector(agno, 2, "AGI")?;
        Agi::decode(&self.sb, agno, &s, at)
    }

    /// AG `agno`'s free list, read as `agf` says.
    ///
    /// # Errors
    /// As [`Xfs::agf`].
    pub fn agfl(&self, agf: &Agf) -> Result<Agfl, FsError> {
        let (s, at) = self.ag_sector(agf.agno, 3, "AGFL")?;
        Agfl::decode(&self.sb, agf, &s, at)
    }
}
