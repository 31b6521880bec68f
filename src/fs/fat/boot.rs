//! The FAT boot sector: the BIOS parameter block (BPB) that gives the
//! volume's geometry, and the extended fields of FAT12/16 and FAT32. One
//! field table per layout ([`BPB`], [`EXT16`], [`EXT32`]); every value the
//! decoder uses is read through a named field constant, so a name cannot
//! be misspelt.
//!
//! The FAT type is decided the way Linux decides it (`fs/fat/inode.c`):
//! a zero 16-bit FAT size with a non-zero 32-bit one is FAT32; otherwise
//! the cluster count decides between FAT12 (at most 4084 clusters) and
//! FAT16. Geometry that no volume can have is refused with the field's
//! name and offset; values that are merely odd are decoded and flagged.
use crate::layout::{Endian, Field, Kind};

use super::FsError;

/// The boot sector's size as read (the BPB lives in its first 90 bytes;
/// sectors may be larger, but nothing past 512 is decoded).
pub const SIZE: usize = 512;

macro_rules! fields {
    ($($id:ident = $name:literal, $off:literal, $size:literal, $kind:ident, $doc:literal;)*) => {
        $(pub const $id: Field = Field::of(Kind::$kind, $name, $off, $size, $doc);)*
    };
}

fields! {
    BS_JMP_BOOT = "BS_jmpBoot", 0x0, 3, Bytes, "jump to the boot code (0xEB xx 0x90 or 0xE9 xx xx)";
    BS_OEM_NAME = "BS_OEMName", 0x3, 8, Text, "the formatting tool's name";
    BPB_BYTS_PER_SEC = "BPB_BytsPerSec", 0xb, 2, Uint, "bytes per sector (512 to 4096)";
    BPB_SEC_PER_CLUS = "BPB_SecPerClus", 0xd, 1, Uint, "sectors per cluster (a power of two)";
    BPB_RSVD_SEC_CNT = "BPB_RsvdSecCnt", 0xe, 2, Uint, "reserved sectors before the first FAT";
    BPB_NUM_FATS = "BPB_NumFATs", 0x10, 1, Uint, "copies of the FAT";
    BPB_ROOT_ENT_CNT = "BPB_RootEntCnt", 0x11, 2, Uint, "root directory entries (FAT12/16; 0 on FAT32)";
    BPB_TOT_SEC16 = "BPB_TotSec16", 0x13, 2, Uint, "total sectors (0: see BPB_TotSec32)";
    BPB_MEDIA = "BPB_Media", 0x15, 1, Uint, "media descriptor (0xF8 fixed disk)";
    BPB_FAT_SZ16 = "BPB_FATSz16", 0x16, 2, Uint, "sectors per FAT (FAT12/16; 0 on FAT32)";
    BPB_SEC_PER_TRK = "BPB_SecPerTrk", 0x18, 2, Uint, "sectors per track (CHS geometry)";
    BPB_NUM_HEADS = "BPB_NumHeads", 0x1a, 2, Uint, "heads (CHS geometry)";
    BPB_HIDD_SEC = "BPB_HiddSec", 0x1c, 4, Uint, "sectors before the volume (its partition's start)";
    BPB_TOT_SEC32 = "BPB_TotSec32", 0x20, 4, Uint, "total sectors (when BPB_TotSec16 is 0)";
}

fields! {
    BS_DRV_NUM = "BS_DrvNum", 0x24, 1, Uint, "BIOS drive number";
    BS_RESERVED1 = "BS_Reserved1", 0x25, 1, Uint, "reserved (Windows NT: dirty flags)";
    BS_BOOT_SIG = "BS_BootSig", 0x26, 1, Uint, "0x29: the next three fields are present";
    BS_VOL_ID = "BS_VolID", 0x27, 4, Uint, "volume serial number";
    BS_VOL_LAB = "BS_VolLab", 0x2b, 11, Text, "volume label";
    BS_FIL_SYS_TYPE = "BS_FilSysType", 0x36, 8, Text, "informational: FAT12, FAT16";
}

fields! {
    BPB_FAT_SZ32 = "BPB_FATSz32", 0x24, 4, Uint, "sectors per FAT";
    BPB_EXT_FLAGS = "BPB_ExtFlags", 0x28, 2, Uint, "bit 7: only one FAT active; bits 0-3: which";
    BPB_FS_VER = "BPB_FSVer", 0x2a, 2, Uint, "version (0.0)";
    BPB_ROOT_CLUS = "BPB_RootClus", 0x2c, 4, Uint, "first cluster of the root directory";
    BPB_FS_INFO = "BPB_FSInfo", 0x30, 2, Uint, "sector of the FSInfo structure";
    BPB_BK_BOOT_SEC = "BPB_BkBootSec", 0x32, 2, Uint, "sector of the backup boot sector";
    BS32_DRV_NUM = "BS_DrvNum", 0x40, 1, Uint, "BIOS drive number";
    BS32_RESERVED1 = "BS_Reserved1", 0x41, 1, Uint, "reserved (Windows NT: dirty flags)";
    BS32_BOOT_SIG = "BS_BootSig", 0x42, 1, Uint, "0x29: the next three fields are present";
    BS32_VOL_ID = "BS_VolID", 0x43, 4, Uint, "volume serial number";
    BS32_VOL_LAB = "BS_VolLab", 0x47, 11, Text, "volume label";
    BS32_FIL_SYS_TYPE = "BS_FilSysType", 0x52, 8, Text, "informational: FAT32";
}

fields! {
    SIGNATURE = "Signature_word", 0x1fe, 2, Uint, "0xAA55";
}

/// The common BPB.
pub const BPB: &[Field] = &[
    BS_JMP_BOOT,
    BS_OEM_NAME,
    BPB_BYTS_PER_SEC,
    BPB_SEC_PER_CLUS,
    BPB_RSVD_SEC_CNT,
    BPB_NUM_FATS,
    BPB_ROOT_ENT_CNT,
    BPB_TOT_SEC16,
    BPB_MEDIA,
    BPB_FAT_SZ16,
    BPB_SEC_PER_TRK,
    BPB_NUM_HEADS,
    BPB_HIDD_SEC,
    BPB_TOT_SEC32,
];

/// The extended boot record of FAT12 and FAT16.
pub const EXT16: &[Field] = &[
    BS_DRV_NUM,
    BS_RESERVED1,
    BS_BOOT_SIG,
    BS_VOL_ID,
    BS_VOL_LAB,
    BS_FIL_SYS_TYPE,
    SIGNATURE,
];

/// The FAT32 part of the BPB and its extended boot record.
pub const EXT32: &[Field] = &[
    BPB_FAT_SZ32,
    BPB_EXT_FLAGS,
    BPB_FS_VER,
    BPB_ROOT_CLUS,
    BPB_FS_INFO,
    BPB_BK_BOOT_SEC,
    BS32_DRV_NUM,
    BS32_RESERVED1,
    BS32_BOOT_SIG,
    BS32_VOL_ID,
    BS32_VOL_LAB,
    BS32_FIL_SYS_TYPE,
    SIGNATURE,
];

/// FAT12, FAT16 or FAT32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    /// Bits per FAT entry.
    pub fn bits(self) -> u64 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }

    /// The smallest entry value meaning "end of chain" (entries are masked
    /// to 28 bits on FAT32).
    pub fn end_of_chain(self) -> u32 {
        match self {
            FatType::Fat12 => 0xff8,
            FatType::Fat16 => 0xfff8,
            FatType::Fat32 => 0x0fff_fff8,
        }
    }

    /// The entry value marking a bad cluster.
    pub fn bad(self) -> u32 {
        self.end_of_chain().saturating_sub(1)
    }

    /// As `minfo` and `fsck.fat` name it.
    pub fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// Linux's limit for FAT12 (`MAX_FAT12`).
const MAX_FAT12_CLUSTERS: u64 = 4084;
/// Linux's limit for FAT16 (`MAX_FAT16`), one below dosfstools'
/// `FAT16_THRESHOLD`: 16-bit entries from 0xfff7 up are marks, not
/// clusters. fsck.fat refuses a FAT16 volume with more; the kernel will
/// not mount it.
pub const MAX_FAT16_CLUSTERS: u64 = 0xfff4;
/// The most clusters a FAT32 volume may have (28-bit entries, less the
/// reserved values).
const MAX_FAT32_CLUSTERS: u64 = 0x0fff_fff5;

/// The decoded boot sector and the geometry derived from it.
#[derive(Clone, Debug)]
pub struct BootSector {
    pub fat_type: FatType,
    pub bytes_per_sector: u64,
    pub sectors_per_cluster: u64,
    pub cluster_size: u64,
    pub reserved_sectors: u64,
    pub num_fats: u64,
    pub root_entries: u64,
    pub total_sectors: u64,
    pub media: u8,
    pub fat_sectors: u64,
    /// FAT32: the root directory's first cluster.
    pub root_cluster: u32,
    /// FAT32: the FSInfo sector (0 or 0xFFFF: none).
    pub fs_info_sector: u64,
    pub backup_boot_sector: u64,
    /// FAT32: bit 7 set means only FAT `ext_flags & 0xf` is in use.
    pub ext_flags: u16,
    /// The volume serial number, when the extended boot record has one.
    pub volume_id: Option<u32>,
    /// The label in the boot sector (raw, trailing spaces kept).
    pub label: Option<[u8; 11]>,
    /// Byte offsets on the volume.
    pub fat_offset: u64,
    pub root_dir_offset: u64,
    pub root_dir_bytes: u64,
    pub data_offset: u64,
    /// Data clusters; valid cluster numbers are 2..=cluster_count+1.
    pub cluster_count: u64,
    /// The data clusters the geometry gives (data sectors over sectors
    /// per cluster), before `cluster_count` is limited to what the FAT and
    /// its entry width can describe.
    pub data_clusters: u64,
    /// Things that are odd but do not stop decoding.
    pub problems: Vec<String>,
}

fn get(f: Field, bytes: &[u8]) -> u64 {
    f.read(bytes, Endian::Little).unwrap_or(0)
}

fn corrupt(f: Field, detail: String) -> FsError {
    FsError::corrupt(
        "FAT boot sector",
        f.name,
        u64::try_from(f.offset).unwrap_or(0),
        detail,
    )
}

fn not_fat(detail: String) -> FsError {
    FsError::NotThisFs { fs: "FAT", detail }
}

impl BootSector {
    /// Decodes the first [`SIZE`] bytes of a volume of `volume_len` bytes.
    ///
    /// # Errors
    /// `NotThisFs` when the bytes do not look like a FAT boot sector at
    /// all (no jump instruction, impossible sector or cluster size, no
    /// FAT); `Corrupt` when they do but the geometry cannot be right.
    pub fn decode(bytes: &[u8], volume_len: u64) -> Result<BootSector, FsError> {
        if bytes.len() < SIZE {
            return Err(not_fat(format!("{} bytes: too small", bytes.len())));
        }
        let jump = bytes.first().copied().unwrap_or(0);
        let jump2 = bytes.get(2).copied().unwrap_or(0);
        // Windows and Linux accept any short jump (0xEB xx) or near jump.
        if !(jump == 0xe9 || jump == 0xeb) {
            return Err(not_fat(format!(
                "no boot jump instruction (first bytes {jump:#04x} .. {jump2:#04x})"
            )));
        }
        let bytes_per_sector = get(BPB_BYTS_PER_SEC, bytes);
        if !(512..=4096).contains(&bytes_per_sector) || !bytes_per_sector.is_power_of_two() {
            return Err(not_fat(format!(
                "BPB_BytsPerSec {bytes_per_sector}: not 512, 1024, 2048 or 4096"
            )));
        }
        let sectors_per_cluster = get(BPB_SEC_PER_CLUS, bytes);
        if sectors_per_cluster == 0 || !sectors_per_cluster.is_power_of_two() {
            return Err(not_fat(format!(
                "BPB_SecPerClus {sectors_per_cluster}: not a power of two"
            )));
        }
        let num_fats = get(BPB_NUM_FATS, bytes);
        if num_fats == 0 {
            return Err(not_fat("BPB_NumFATs is 0".to_owned()));
        }
        let reserved_sectors = get(BPB_RSVD_SEC_CNT, bytes);
        if reserved_sectors == 0 {
            return Err(corrupt(
                BPB_RSVD_SEC_CNT,
                "0: the boot sector itself is reserved".to_owned(),
            ));
        }
        let media = u8::try_from(get(BPB_MEDIA, bytes)).unwrap_or(0);
        let mut problems = Vec::new();
        if media != 0xf0 && media < 0xf8 {
            problems.push(format!(
                "BPB_Media {media:#04x}: not a media descriptor (0xF0, 0xF8-0xFF)"
            ));
        }
        let fat16 = get(BPB_FAT_SZ16, bytes);
        let fat32 = get(BPB_FAT_SZ32, bytes);
        let is32 = fat16 == 0 && fat32 != 0;
        let fat_sectors = if is32 { fat32 } else { fat16 };
        if fat_sectors == 0 {
            return Err(not_fat("BPB_FATSz16 and BPB_FATSz32 are 0".to_owned()));
        }
        let total16 = get(BPB_TOT_SEC16, bytes);
        let total_sectors = if total16 != 0 {
            total16
        } else {
            get(BPB_TOT_SEC32, bytes)
        };
        let cluster_size = bytes_per_sector.saturating_mul(sectors_per_cluster);
        if cluster_size > 1 << 21 {
            return Err(corrupt(
                BPB_SEC_PER_CLUS,
                format!("clusters of {cluster_size} bytes (more than 2 MiB)"),
            ));
        }
        let root_entries = if is32 {
            0
        } else {
            get(BPB_ROOT_ENT_CNT, bytes)
        };
        let root_dir_bytes = root_entries.saturating_mul(32);
        let root_dir_sectors = root_dir_bytes.div_ceil(bytes_per_sector);
        let fats_sectors = num_fats.saturating_mul(fat_sectors);
        let meta_sectors = reserved_sectors
            .saturating_add(fats_sectors)
            .saturating_add(root_dir_sectors);
        let Some(data_sectors) = total_sectors.checked_sub(meta_sectors) else {
            return Err(corrupt(
                BPB_TOT_SEC32,
                format!(
                    "{total_sectors} sectors in all, fewer than the {meta_sectors} of the reserved area, FATs and root directory"
                ),
            ));
        };
        let count = data_sectors.checked_div(sectors_per_cluster).unwrap_or(0);
        let fat_type = if is32 {
            FatType::Fat32
        } else if count <= MAX_FAT12_CLUSTERS {
            FatType::Fat12
        } else {
            FatType::Fat16
        };
        // Clusters the FAT has room for: a volume claiming more clusters
        // than its FAT can describe uses only those.
        let fat_bytes = fat_sectors.saturating_mul(bytes_per_sector);
        let fat_room = fat_bytes
            .saturating_mul(8)
            .checked_div(fat_type.bits())
            .unwrap_or(0)
            .saturating_sub(2);
        let mut cluster_count = count;
        if cluster_count > fat_room {
            problems.push(format!(
                "{count} data clusters, but the FAT has entries for {fat_room}: only those are used"
            ));
            cluster_count = fat_room;
        }
        if fat_type == FatType::Fat16 && count > MAX_FAT16_CLUSTERS {
            // As fsck.fat ("Too many clusters for FAT16 filesystem"): the
            // volume is invalid; what can be shown is the part 16-bit
            // entries address, and it costs what a real FAT16 costs.
            problems.push(format!(
                "{count} data clusters: more than a FAT16 can address ({MAX_FAT16_CLUSTERS}); only those are used"
            ));
            cluster_count = cluster_count.min(MAX_FAT16_CLUSTERS);
        }
        if fat_type == FatType::Fat32 && cluster_count > MAX_FAT32_CLUSTERS {
            cluster_count = MAX_FAT32_CLUSTERS;
        }
        let bytes_of = |sectors: u64| sectors.saturating_mul(bytes_per_sector);
        let fat_offset = bytes_of(reserved_sectors);
        let root_dir_offset = bytes_of(reserved_sectors.saturating_add(fats_sectors));
        let data_offset = root_dir_offset.saturating_add(bytes_of(root_dir_sectors));
        if bytes_of(total_sectors) > volume_len {
            problems.push(format!(
                "the boot sector claims {} bytes, the volume has {volume_len}",
                bytes_of(total_sectors)
            ));
        }
        let (id_field, label_field, sig_field) = if is32 {
            (BS32_VOL_ID, BS32_VOL_LAB, BS32_BOOT_SIG)
        } else {
            (BS_VOL_ID, BS_VOL_LAB, BS_BOOT_SIG)
        };
        let has_ebr = matches!(get(sig_field, bytes), 0x28 | 0x29);
        let label = (has_ebr && get(sig_field, bytes) == 0x29)
            .then(|| {
                let start = label_field.offset;
                bytes
                    .get(start..start.checked_add(11)?)
                    .and_then(|b| <[u8; 11]>::try_from(b).ok())
            })
            .flatten();
        let volume_id = has_ebr.then(|| u32::try_from(get(id_field, bytes)).unwrap_or(0));
        if get(SIGNATURE, bytes) != 0xaa55 {
            problems.push(format!(
                "boot sector signature {:#06x}, expected 0xaa55",
                get(SIGNATURE, bytes)
            ));
        }
        let root_cluster = if is32 {
            u32::try_from(get(BPB_ROOT_CLUS, bytes)).unwrap_or(0)
        } else {
            0
        };
        Ok(BootSector {
            fat_type,
            bytes_per_sector,
            sectors_per_cluster,
            cluster_size,
            reserved_sectors,
            num_fats,
            root_entries,
            total_sectors,
            media,
            fat_sectors,
            root_cluster,
            fs_info_sector: if is32 { get(BPB_FS_INFO, bytes) } else { 0 },
            backup_boot_sector: if is32 { get(BPB_BK_BOOT_SEC, bytes) } else { 0 },
            ext_flags: if is32 {
                u16::try_from(get(BPB_EXT_FLAGS, bytes)).unwrap_or(0)
            } else {
                0
            },
            volume_id,
            label,
            fat_offset,
            root_dir_offset,
            root_dir_bytes,
            data_offset,
            cluster_count,
            data_clusters: count,
            problems,
        })
    }

    /// The field tables that apply to this layout.
    pub fn tables(&self) -> [&'static [Field]; 2] {
        match self.fat_type {
            FatType::Fat32 => [BPB, EXT32],
            _ => [BPB, EXT16],
        }
    }

    /// The FAT copy that is read: the active one when FAT32 mirroring is
    /// off, else the first.
    pub fn active_fat(&self) -> u64 {
        if self.fat_type == FatType::Fat32 && self.ext_flags & 0x80 != 0 {
            let n = u64::from(self.ext_flags & 0xf);
            if n < self.num_fats {
                return n;
            }
        }
        0
    }

    /// The byte offset of a data cluster on the volume, if it exists.
    pub fn cluster_offset(&self, cluster: u32) -> Option<u64> {
        let index = u64::from(cluster).checked_sub(2)?;
        if index >= self.cluster_count {
            return None;
        }
        self.data_offset
            .checked_add(index.checked_mul(self.cluster_size)?)
    }

    /// The serial number as `blkid` and `mdir` print it (`22AE-7E89`).
    pub fn serial_text(&self) -> Option<String> {
        self.volume_id
            .map(|id| format!("{:04X}-{:04X}", id >> 16, id & 0xffff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat16() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
        b[0xb..0xd].copy_from_slice(&512u16.to_le_bytes());
        b[0xd] = 4;
        b[0xe..0x10].copy_from_slice(&4u16.to_le_bytes());
        b[0x10] = 2;
        b[0x11..0x13].copy_from_slice(&512u16.to_le_bytes());
        b[0x13..0x15].copy_from_slice(&40000u16.to_le_bytes());
        b[0x15] = 0xf8;
        b[0x16..0x18].copy_from_slice(&40u16.to_le_bytes());
        b[0x26] = 0x29;
        b[0x27..0x2b].copy_from_slice(&0x22ae_7e89u32.to_le_bytes());
        b[0x2b..0x36].copy_from_slice(b"MYLABEL    ");
        b[0x1fe..].copy_from_slice(&[0x55, 0xaa]);
        b
    }

    /// The geometry `fsck.fat -v` printed for `mkfs.vfat -C -F 16 img 20000`.
    #[test]
    fn geometry_matches_fsck_fat() {
        let bs = BootSector::decode(&fat16(), 40000 * 512).unwrap();
        assert_eq!(bs.fat_type, FatType::Fat16);
        assert_eq!(bs.cluster_size, 2048);
        assert_eq!(bs.fat_offset, 2048);
        assert_eq!(bs.root_dir_offset, 43008);
        assert_eq!(bs.data_offset, 59392);
        assert_eq!(bs.cluster_count, 9971);
        assert_eq!(bs.serial_text().unwrap(), "22AE-7E89");
        assert!(bs.problems.is_empty(), "{:?}", bs.problems);
    }

    #[test]
    fn impossible_geometry_is_refused_by_name() {
        let mut b = fat16();
        b[0xd] = 0;
        assert!(BootSector::decode(&b, 1 << 30)
            .unwrap_err()
            .to_string()
            .contains("BPB_SecPerClus"));
        let mut b = fat16();
        b[0x13..0x15].copy_from_slice(&50u16.to_le_bytes());
        let e = BootSector::decode(&b, 1 << 30).unwrap_err().to_string();
        assert!(e.contains("BPB_TotSec32") && e.contains("fewer"), "{e}");
        // An MBR (no jump instruction) is not a FAT boot sector.
        let mut b = fat16();
        b[0] = 0xfa;
        assert!(matches!(
            BootSector::decode(&b, 1 << 30),
            Err(FsError::NotThisFs { .. })
        ));
    }
}
