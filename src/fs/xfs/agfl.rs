//! The AG free list (`struct xfs_agfl`): the fourth sector of each
//! allocation group, a ring of block numbers kept free for the AG's own
//! B+trees. On v5 it has a header (magic, AG, UUID, LSN, CRC); on v4 the
//! sector is only the ring.
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind};

use super::agf::Agf;
use super::be::{u32_at, u64_of};
use super::crc::{self, Check};
use super::superblock::Superblock;
use crate::fs::FsError;

/// `agfl_magicnum`: "XAFL".
pub const MAGIC: u32 = 0x5841_464c;
const CRC_OFF: usize = 0x20;
/// The v5 header's size: the ring starts here.
const V5_HEADER: usize = 36;

pub const AGFL: &[Field] = &[
    Field::new("agfl_magicnum", 0x0, 4, "magic: XAFL"),
    Field::new("agfl_seqno", 0x4, 4, "AG number"),
    Field::of(Kind::Uuid, "agfl_uuid", 0x8, 16, "filesystem UUID"),
    Field::new("agfl_lsn", 0x18, 8, "last write sequence"),
    Field::new("agfl_crc", 0x20, 4, "CRC-32C of the sector (little-endian)"),
];

/// A decoded AGFL.
#[derive(Clone, Debug)]
pub struct Agfl {
    pub agno: u32,
    pub offset: u64,
    /// The v5 header's fields (none on v4).
    pub fields: Vec<FieldValue>,
    /// The blocks on the free list, `agf_flfirst` to `agf_fllast` round
    /// the ring: (slot, AG block).
    pub blocks: Vec<(u32, u32)>,
    /// Disk offset of the ring's first slot.
    pub ring_offset: u64,
    /// Slots in the ring.
    pub slots: u32,
    pub crc: Option<Check>,
    pub problems: Vec<String>,
}

impl Agfl {
    /// Decodes AG `agno`'s free list, reading the ring as `agf` says.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic on v5.
    pub fn decode(sb: &Superblock, agf: &Agf, sector: &[u8], offset: u64) -> Result<Agfl, FsError> {
        let agno = agf.agno;
        let v5 = sb.is_v5();
        let start = if v5 { V5_HEADER } else { 0 };
        let slots = u32::try_from(sector.len().saturating_sub(start) / 4).unwrap_or(0);
        let mut agfl = Agfl {
            agno,
            offset,
            fields: Vec::new(),
            blocks: Vec::new(),
            ring_offset: offset.saturating_add(u64_of(start)),
            slots,
            crc: None,
            problems: Vec::new(),
        };
        if v5 {
            let magic = u32_at(sector, 0).unwrap_or(0);
            if magic != MAGIC {
                return Err(FsError::corrupt(
                    "AGFL",
                    "agfl_magicnum",
                    offset,
                    format!("AG {agno}: {magic:#010x}, expected {MAGIC:#010x} (XAFL)"),
                ));
            }
            agfl.fields = decode_table(AGFL, sector, Endian::Big, offset);
            if u32_at(sector, 4) != Some(agno) {
                agfl.problems
                    .push(format!("AG {agno}: agfl_seqno is not the AG number"));
            }
            agfl.crc = crc::check(sector, CRC_OFF);
            if let Some(c) = agfl.crc.filter(|c| !c.ok()) {
                agfl.problems.push(format!(
                    "AG {agno}: AGFL CRC {:#010x} does not match the computed {:#010x}",
                    c.stored, c.computed
                ));
            }
        }
        if agf.flcount == 0 {
            return Ok(agfl);
        }
        if agf.flfirst >= slots || agf.fllast >= slots || agf.flcount > slots {
            agfl.problems.push(format!(
                "AG {agno}: agf_flfirst {} / agf_fllast {} / agf_flcount {} do not fit a free list of {slots} slots",
                agf.flfirst, agf.fllast, agf.flcount
            ));
            return Ok(agfl);
        }
        // The ring from flfirst to fllast, at most `slots` steps.
        let mut i = agf.flfirst;
        for _ in 0..slots {
            let at = usize::try_from(i)
                .unwrap_or(usize::MAX)
                .saturating_mul(4)
                .saturating_add(start);
            let bno = u32_at(sector, at).unwrap_or(u32::MAX);
            if bno >= agf.length {
                agfl.problems.push(format!(
                    "AG {agno}: free list slot {i} names block {bno}, outside the AG"
                ));
            }
            agfl.blocks.push((i, bno));
            if i == agf.fllast {
                break;
            }
            i = i.saturating_add(1).checked_rem(slots).unwrap_or(0);
        }
        if u64_of(agfl.blocks.len()) != u64::from(agf.flcount) {
            agfl.problems.push(format!(
                "AG {agno}: the free list holds {} blocks from agf_flfirst to agf_fllast, agf_flcount says {}",
                agfl.blocks.len(),
                agf.flcount
            ));
        }
        Ok(agfl)
    }
}
