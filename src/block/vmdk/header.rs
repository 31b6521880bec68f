//! Sparse extent headers: VMDK4 (`KDMV`, hosted sparse and
//! streamOptimized, with its footer), VMDK3 (`COWD`, ESX vmfsSparse) and
//! ESXi's seSparse. Pure decoders over bytes, checked the way qemu's
//! `vmdk_open_vmdk4`, `vmdk_open_vmfs_sparse` and `vmdk_open_se_sparse`
//! check them.
use crate::block::image::{be32, le16, le32, le64};
use crate::layout::Field;

/// `KDMV` read big-endian, as qemu compares it.
pub const VMDK4_MAGIC: u32 = 0x4b44_4d56;
/// `COWD`.
pub const VMDK3_MAGIC: u32 = 0x434f_5744;
/// seSparse constant header magic.
pub const SESPARSE_MAGIC: u64 = 0xcafe_babe;
const SESPARSE_VOLATILE_MAGIC: u64 = 0xcafe_cafe;

/// Flags of a VMDK4 header.
pub const FLAG_RGD: u32 = 1 << 1;
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
pub const FLAG_COMPRESS: u32 = 1 << 16;
pub const FLAG_MARKER: u32 = 1 << 17;
/// `gd_offset` of a stream whose grain directory follows the grains.
pub const GD_AT_END: u64 = u64::MAX;
/// Deflate, the only compression VMDK defines.
pub const COMPRESSION_DEFLATE: u16 = 1;

/// The VMDK4 header (little-endian, after the 4-byte magic).
pub const VMDK4_HEADER: &[Field] = &[
    Field::new("magicNumber", 0, 4, "KDMV"),
    Field::new("version", 4, 4, "1, 2 or 3"),
    Field::new(
        "flags",
        8,
        4,
        "bit 1 redundant GD, bit 2 zeroed grains, bit 16 compressed, bit 17 markers",
    ),
    Field::new("capacity", 12, 8, "extent size in sectors"),
    Field::new("grainSize", 20, 8, "grain size in sectors"),
    Field::new("descriptorOffset", 28, 8, "embedded descriptor, in sectors"),
    Field::new(
        "descriptorSize",
        36,
        8,
        "embedded descriptor size, in sectors",
    ),
    Field::new("numGTEsPerGT", 44, 4, "entries per grain table"),
    Field::new("rgdOffset", 48, 8, "redundant grain directory, in sectors"),
    Field::new(
        "gdOffset",
        56,
        8,
        "grain directory, in sectors (all ones: in the footer)",
    ),
    Field::new("overHead", 64, 8, "sectors before the first grain"),
    Field::new(
        "uncleanShutdown",
        72,
        1,
        "the extent was not closed cleanly",
    ),
    Field::new("compressAlgorithm", 77, 2, "0 none, 1 deflate"),
];

/// A decoded VMDK4 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmdk4 {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub granularity: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub num_gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub grain_offset: u64,
    pub unclean: bool,
    pub compress_algorithm: u16,
}

impl Vmdk4 {
    /// Decodes the 512-byte header sector (magic included).
    pub fn decode(b: &[u8]) -> Option<Vmdk4> {
        if be32(b, 0)? != VMDK4_MAGIC {
            return None;
        }
        Some(Vmdk4 {
            version: le32(b, 4)?,
            flags: le32(b, 8)?,
            capacity: le64(b, 12)?,
            granularity: le64(b, 20)?,
            desc_offset: le64(b, 28)?,
            desc_size: le64(b, 36)?,
            num_gtes_per_gt: le32(b, 44)?,
            rgd_offset: le64(b, 48)?,
            gd_offset: le64(b, 56)?,
            grain_offset: le64(b, 64)?,
            unclean: b.get(72).is_some_and(|&x| x != 0),
            compress_algorithm: le16(b, 77)?,
        })
    }

    /// Compressed grains (streamOptimized).
    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }
}

/// What is wrong with a stream's footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadFooter {
    /// Offset within the 1536 bytes, and what.
    At(u64, &'static str),
}

/// The footer of a streamOptimized extent whose header says `GD_AT_END`:
/// the last 1536 bytes are a footer marker, a copy of the header that
/// holds the real grain directory offset, and an end-of-stream marker.
///
/// # Errors
/// The checks qemu makes ("Invalid footer").
pub fn decode_footer(b: &[u8]) -> Result<Vmdk4, BadFooter> {
    let marker_size = le32(b, 8);
    let marker_type = le32(b, 12);
    if marker_size != Some(0) || marker_type != Some(3) {
        return Err(BadFooter::At(0, "footer marker (size 0, type 3) missing"));
    }
    let header = b
        .get(512..1024)
        .and_then(Vmdk4::decode)
        .ok_or(BadFooter::At(512, "footer has no KDMV header"))?;
    if le64(b, 1024) != Some(0) || le32(b, 1032) != Some(0) || le32(b, 1036) != Some(0) {
        return Err(BadFooter::At(1024, "end-of-stream marker missing"));
    }
    Ok(header)
}

/// A decoded VMDK3 (`COWD`) header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmdk3 {
    pub disk_sectors: u32,
    pub granularity: u32,
    pub l1dir_offset: u32,
    pub l1dir_size: u32,
}

impl Vmdk3 {
    /// Decodes the header (magic included).
    pub fn decode(b: &[u8]) -> Option<Vmdk3> {
        if be32(b, 0)? != VMDK3_MAGIC {
            return None;
        }
        Some(Vmdk3 {
            disk_sectors: le32(b, 12)?,
            granularity: le32(b, 16)?,
            l1dir_offset: le32(b, 20)?,
            l1dir_size: le32(b, 24)?,
        })
    }
}

/// A decoded seSparse constant header (the fields qemu uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeSparse {
    pub capacity: u64,
    pub grain_size: u64,
    pub grain_table_size: u64,
    pub volatile_header_offset: u64,
    pub grain_dir_offset: u64,
    pub grain_dir_size: u64,
    pub grain_tables_offset: u64,
    pub grains_offset: u64,
}

impl SeSparse {
    /// Decodes and checks the 512-byte constant header as qemu's
    /// `check_se_sparse_const_header` does ("format not officially
    /// documented": anything unexpected is refused).
    ///
    /// # Errors
    /// (offset in the header, what).
    pub fn decode(b: &[u8]) -> Result<SeSparse, (u64, String)> {
        let q = |at: usize| {
            le64(b, at).ok_or((
                u64::try_from(at).unwrap_or(0),
                "header truncated".to_owned(),
            ))
        };
        if q(0)? != SESPARSE_MAGIC {
            return Err((0, format!("bad magic {:#018x}", q(0)?)));
        }
        if q(8)? != 0x0000_0002_0000_0001 {
            return Err((8, format!("unsupported version {:#018x}", q(8)?)));
        }
        if q(24)? != 8 {
            return Err((24, format!("unsupported grain size {}", q(24)?)));
        }
        if q(32)? != 64 {
            return Err((32, format!("unsupported grain table size {}", q(32)?)));
        }
        if q(40)? != 0 {
            return Err((40, format!("unsupported flags {:#x}", q(40)?)));
        }
        for at in [48, 56, 64, 72] {
            if q(at)? != 0 {
                return Err((
                    u64::try_from(at).unwrap_or(0),
                    "reserved field is not zero".into(),
                ));
            }
        }
        if b.get(208..512)
            .is_none_or(|pad| pad.iter().any(|&x| x != 0))
        {
            return Err((208, "padding is not zero".into()));
        }
        Ok(SeSparse {
            capacity: q(16)?,
            grain_size: q(24)?,
            grain_table_size: q(32)?,
            volatile_header_offset: q(80)?,
            grain_dir_offset: q(128)?,
            grain_dir_size: q(136)?,
            grain_tables_offset: q(144)?,
            grains_offset: q(192)?,
        })
    }

    /// Checks the volatile header (`check_se_sparse_volatile_header`).
    ///
    /// # Errors
    /// (offset in the header, what).
    pub fn check_volatile(b: &[u8]) -> Result<(), (u64, String)> {
        if le64(b, 0) != Some(SESPARSE_VOLATILE_MAGIC) {
            return Err((0, "bad volatile header magic".into()));
        }
        if le64(b, 24) != Some(0) {
            return Err((24, "the journal needs replaying (image is dirty)".into()));
        }
        if b.get(32..512).is_none_or(|pad| pad.iter().any(|&x| x != 0)) {
            return Err((32, "volatile header padding is not zero".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    fn vmdk4(gd: u64) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&3u32.to_le_bytes());
        b[8..12].copy_from_slice(&(FLAG_COMPRESS | FLAG_MARKER | 1).to_le_bytes());
        b[12..20].copy_from_slice(&2048u64.to_le_bytes());
        b[20..28].copy_from_slice(&128u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b[56..64].copy_from_slice(&gd.to_le_bytes());
        b[77..79].copy_from_slice(&1u16.to_le_bytes());
        b
    }

    #[test]
    fn header_and_footer() {
        let h = Vmdk4::decode(&vmdk4(GD_AT_END)).unwrap();
        assert_eq!((h.version, h.capacity, h.granularity), (3, 2048, 128));
        assert!(h.compressed());
        let mut footer = vec![0u8; 1536];
        footer[12..16].copy_from_slice(&3u32.to_le_bytes());
        footer[512..1024].copy_from_slice(&vmdk4(77));
        assert_eq!(decode_footer(&footer).unwrap().gd_offset, 77);
        footer[1036] = 9;
        assert!(decode_footer(&footer).is_err());
        assert!(Vmdk4::decode(b"COWD").is_none());
    }

    #[test]
    fn sesparse_is_strict() {
        let mut b = vec![0u8; 512];
        b[..8].copy_from_slice(&SESPARSE_MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&0x0000_0002_0000_0001u64.to_le_bytes());
        b[24..32].copy_from_slice(&8u64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        assert!(SeSparse::decode(&b).is_ok());
        b[300] = 1;
        assert_eq!(SeSparse::decode(&b).unwrap_err().0, 208);
    }
}
