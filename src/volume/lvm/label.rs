//! The LVM2 on-disk label of a physical volume: the label header in one of
//! the first four sectors, the PV header after it (UUID, size, data and
//! metadata areas), and each metadata area's header, whose raw locations
//! point at the VG's text metadata in a circular buffer.
//!
//! Layout from LVM2's `lib/format_text/layout.h` and `lib/label/label.h`.
//! Every area offset is checked against the PV, and the text read is
//! bounded by [`MAX_TEXT`].
use crate::block::{BlockError, BlockSource};
use crate::layout::{Field, Kind};

use super::super::bytes::{le32, le64, slice, us};
use super::super::table::{Crc, Problem};

/// Where LVM looks for the label: the first four 512-byte sectors.
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// The most metadata text read from one area.
pub const MAX_TEXT: u64 = 16 << 20;
/// LVM's CRC seed.
pub const INITIAL_CRC: u32 = 0xf597_a6cf;
/// The metadata area header's magic.
pub const FMTT_MAGIC: &[u8; 16] =
    b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e";
const MDA_HEADER_SIZE: u64 = 512;
const MAX_AREAS: usize = 16;

// label_header
pub const LABEL_ID: Field = Field::of(Kind::Bytes, "id", 0, 8, "\"LABELONE\"");
pub const LABEL_SECTOR: Field = Field::new("sector_xl", 8, 8, "the sector of this label");
pub const LABEL_CRC: Field = Field::new(
    "crc_xl",
    16,
    4,
    "CRC from offset_xl to the end of the sector",
);
pub const LABEL_OFFSET: Field = Field::new("offset_xl", 20, 4, "where the PV header starts");
pub const LABEL_TYPE: Field = Field::of(Kind::Bytes, "type", 24, 8, "\"LVM2 001\"");
/// The label header's fields.
pub const LABEL_HEADER: &[Field] = &[LABEL_ID, LABEL_SECTOR, LABEL_CRC, LABEL_OFFSET, LABEL_TYPE];

// mda_header
pub const MDA_CHECKSUM: Field = Field::new("checksum_xl", 0, 4, "CRC of the rest of the header");
pub const MDA_MAGIC: Field = Field::of(Kind::Bytes, "magic", 4, 16, "\" LVM2 x[5A%r0N*>\"");
pub const MDA_VERSION: Field = Field::new("version", 20, 4, "1");
pub const MDA_START: Field = Field::new("start", 24, 8, "this area's offset on the PV");
pub const MDA_SIZE: Field = Field::new("size", 32, 8, "this area's size");
/// The metadata area header's fields (raw locations follow at 40).
pub const MDA_HEADER: &[Field] = &[MDA_CHECKSUM, MDA_MAGIC, MDA_VERSION, MDA_START, MDA_SIZE];

/// LVM's `calc_crc`: CRC-32 (reflected, 0xEDB88320) without the usual
/// inversions, from a seed.
pub fn calc_crc(initial: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!initial);
    h.update(data);
    !h.finalize()
}

/// A PV UUID as LVM prints it: 32 characters in groups 6-4-4-4-4-4-6.
pub fn format_uuid(id: &[u8]) -> String {
    let s = String::from_utf8_lossy(id);
    let mut out = String::new();
    let mut chars = s.chars();
    for (i, n) in [6usize, 4, 4, 4, 4, 4, 6].iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.extend(chars.by_ref().take(*n));
    }
    out
}

/// A physical volume's label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector the label is in (0 to 3).
    pub sector: u64,
    pub crc: Crc,
    /// The PV UUID (32 characters, unformatted, as the metadata names it).
    pub uuid: String,
    pub device_size: u64,
    /// Data areas (offset, size) in bytes from the PV start; the first
    /// starts the physical extents (`pe_start`).
    pub data_areas: Vec<(u64, u64)>,
    /// Metadata areas (offset, size).
    pub metadata_areas: Vec<(u64, u64)>,
}

/// A metadata text found in one metadata area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataText {
    /// Where the area is on the PV.
    pub area: u64,
    pub text: Vec<u8>,
    pub crc: Crc,
}

/// Reads the label of the PV `pv` (one volume), if it has one.
///
/// # Errors
/// Read errors; a damaged label is a problem in `problems` and `None`.
pub fn read_label(
    pv: &dyn BlockSource,
    problems: &mut Vec<Problem>,
    place: &str,
) -> Result<Option<PvLabel>, BlockError> {
    let n = LABEL_SCAN_SECTORS.saturating_mul(512).min(pv.len());
    let mut head = vec![0u8; us(n).unwrap_or(0)];
    pv.read_at(0, &mut head)?;
    for sector in 0..LABEL_SCAN_SECTORS {
        let at = us(sector.saturating_mul(512)).unwrap_or(0);
        let Some(l) = slice(&head, at, 512) else {
            break;
        };
        if l.get(0..8) != Some(b"LABELONE".as_slice()) {
            continue;
        }
        let structure = format!("{place}: LVM label in sector {sector}");
        if l.get(24..32) != Some(b"LVM2 001".as_slice()) {
            problems.push(Problem::new(
                structure,
                Some(sector.saturating_mul(512)),
                "label type is not \"LVM2 001\"",
            ));
            return Ok(None);
        }
        let stored = le32(l, LABEL_CRC.offset)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let computed = calc_crc(INITIAL_CRC, l.get(20..).unwrap_or(&[]));
        let crc = Crc { stored, computed };
        if !crc.ok() {
            problems.push(Problem::new(
                structure.clone(),
                Some(sector.saturating_mul(512)),
                format!("label CRC {stored:#010x} stored, {computed:#010x} computed (used anyway, as LVM would not)"),
            ));
        }
        let pvh = us(le32(l, LABEL_OFFSET.offset).unwrap_or(0)).unwrap_or(usize::MAX);
        let Some(id) = slice(l, pvh, 32) else {
            problems.push(Problem::new(
                structure,
                Some(sector.saturating_mul(512)),
                "PV header outside the sector",
            ));
            return Ok(None);
        };
        let device_size = le64(l, pvh.saturating_add(32)).unwrap_or(0);
        let mut pos = pvh.saturating_add(40);
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            while let (Some(off), Some(size)) = (le64(l, pos), le64(l, pos.saturating_add(8))) {
                pos = pos.saturating_add(16);
                if off == 0 && size == 0 {
                    break;
                }
                if list.len() < MAX_AREAS {
                    list.push((off, size));
                }
            }
        }
        let [data_areas, metadata_areas] = lists;
        return Ok(Some(PvLabel {
            sector,
            crc,
            uuid: String::from_utf8_lossy(id).into_owned(),
            device_size,
            data_areas,
            metadata_areas,
        }));
    }
    Ok(None)
}

/// Reads the newest metadata text of each metadata area of `pv` (LVM
/// keeps one live text per area, the others are old). Damaged areas are
/// problems; the texts that check are returned.
///
/// # Errors
/// Read errors.
pub fn read_texts(
    pv: &dyn BlockSource,
    label: &PvLabel,
    problems: &mut Vec<Problem>,
    place: &str,
) -> Result<Vec<MetadataText>, BlockError> {
    let mut out = Vec::new();
    for &(area, area_size) in &label.metadata_areas {
        let structure = format!("{place}: LVM metadata area at {area:#x}");
        let mut bad =
            |detail: String| problems.push(Problem::new(structure.clone(), Some(area), detail));
        if area.checked_add(area_size).is_none_or(|e| e > pv.len()) || area_size < MDA_HEADER_SIZE {
            bad(format!(
                "{area_size} bytes at {area:#x} do not fit the PV ({} bytes)",
                pv.len()
            ));
            continue;
        }
        let mut h = vec![0u8; us(MDA_HEADER_SIZE).unwrap_or(512)];
        pv.read_at(area, &mut h)?;
        if h.get(4..20) != Some(FMTT_MAGIC.as_slice()) {
            bad("no metadata area magic".into());
            continue;
        }
        let stored = le32(&h, 0).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        let computed = calc_crc(INITIAL_CRC, h.get(4..).unwrap_or(&[]));
        if stored != computed {
            bad(format!(
                "header CRC {stored:#010x} stored, {computed:#010x} computed"
            ));
            continue;
        }
        // The first raw location is the live one.
        let (Some(off), Some(size), Some(sum), Some(flags)) =
            (le64(&h, 40), le64(&h, 48), le32(&h, 56), le32(&h, 60))
        else {
            continue;
        };
        if off == 0 && size == 0 {
            continue; // an empty area (metadata kept elsewhere)
        }
        if flags & 1 != 0 {
            continue; // RAW_LOCN_IGNORED
        }
        if size > MAX_TEXT {
            bad(format!(
                "metadata text of {size} bytes: more than the {MAX_TEXT} bytes layerscope reads"
            ));
            continue;
        }
        if off < MDA_HEADER_SIZE
            || off >= area_size
            || size > area_size.saturating_sub(MDA_HEADER_SIZE)
        {
            bad(format!(
                "text at {off:#x} ({size} bytes) is outside the {area_size}-byte area"
            ));
            continue;
        }
        // A circular buffer: the text may wrap to just after the header.
        let first = size.min(area_size.saturating_sub(off));
        let mut text = vec![0u8; us(size).unwrap_or(0)];
        let (a, b) = text.split_at_mut(us(first).unwrap_or(0));
        pv.read_at(area.saturating_add(off), a)?;
        if !b.is_empty() {
            pv.read_at(area.saturating_add(MDA_HEADER_SIZE), b)?;
        }
        let crc = Crc {
            stored: u32::try_from(sum).unwrap_or(0),
            computed: calc_crc(INITIAL_CRC, &text),
        };
        if !crc.ok() {
            bad(format!(
                "metadata text CRC {:#010x} stored, {:#010x} computed",
                crc.stored, crc.computed
            ));
            continue;
        }
        // The text ends at its NUL.
        if let Some(end) = text.iter().position(|&c| c == 0) {
            text.truncate(end);
        }
        out.push(MetadataText { area, text, crc });
    }
    Ok(out)
}
