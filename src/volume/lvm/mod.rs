//! LVM2: physical volumes found among the disk's volumes, their volume
//! groups (from the newest text metadata of each), and the logical volumes,
//! opened when they are linear or striped over PVs of this disk.
//!
//! Thin pools and thin volumes, snapshots, RAID, mirrors, caches and the
//! other segment types are listed with a "not supported" reason rather
//! than read: their bytes are not where a linear reading would put them.
//!
//! - [`label`]: the PV label and metadata area headers;
//! - [`metadata`]: the text metadata parser;
//! - [`segments`]: LV segments to disk [`super::slice::Geometry`].
use serde::Serialize;

use crate::block::{BlockError, BlockSource};

use super::table::Problem;

pub mod label;
pub mod metadata;
pub mod segments;

/// A physical volume of a VG, as the metadata describes it, and where it
/// was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhysicalVolume {
    /// Its key in the metadata (`pv0`).
    #[serde(serialize_with = "crate::volume::escaped")]
    pub key: String,
    /// Its UUID, as LVM prints it.
    #[serde(serialize_with = "crate::volume::escaped")]
    pub uuid: String,
    /// The device path LVM last saw it at (a hint only).
    #[serde(serialize_with = "crate::volume::escaped")]
    pub device: String,
    /// Where its extents start, in bytes from the PV start.
    pub pe_start: u64,
    pub pe_count: u64,
    /// The volume of this disk that holds it (`p2`, `disk`), if found.
    #[serde(serialize_with = "crate::volume::escaped_opt")]
    pub volume: Option<String>,
    /// That volume's start on the disk and length.
    #[serde(skip)]
    pub found_at: Option<(u64, u64)>,
}

/// One segment of an LV, as the metadata says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LvSegment {
    pub start_extent: u64,
    pub extent_count: u64,
    /// `striped` (linear is striped with one stripe), `thin`, `raid1`, …
    #[serde(rename = "type")]
    #[serde(serialize_with = "crate::volume::escaped")]
    pub kind: String,
    pub stripe_count: u64,
    /// Stripe size in bytes (striped segments of several stripes).
    pub stripe_size: Option<u64>,
    /// (PV key or LV name, first extent) of each stripe.
    #[serde(serialize_with = "escaped_stripes")]
    pub stripes: Vec<(String, u64)>,
}

fn escaped_stripes<S: serde::Serializer>(l: &[(String, u64)], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(l.iter().map(|(n, e)| (crate::escape::printable(n), *e)))
}

/// A logical volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogicalVolume {
    #[serde(serialize_with = "crate::volume::escaped")]
    pub name: String,
    #[serde(serialize_with = "crate::volume::escaped")]
    pub uuid: String,
    /// Shown by `lvs` without `-a`.
    pub visible: bool,
    #[serde(serialize_with = "crate::volume::escaped_list")]
    pub status: Vec<String>,
    /// `linear`, `striped`, or the segment type that is not supported.
    #[serde(serialize_with = "crate::volume::escaped")]
    pub layout: String,
    pub extents: u64,
    /// Size in bytes, when `extents * extent_size` fits.
    pub size: Option<u64>,
    pub segments: Vec<LvSegment>,
    /// Why it cannot be opened (`None`: it can).
    #[serde(serialize_with = "crate::volume::escaped_opt")]
    pub unsupported: Option<String>,
}

/// A volume group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeGroup {
    #[serde(serialize_with = "crate::volume::escaped")]
    pub name: String,
    #[serde(serialize_with = "crate::volume::escaped")]
    pub uuid: String,
    pub seqno: u64,
    /// Bytes per physical extent.
    pub extent_size: u64,
    pub pvs: Vec<PhysicalVolume>,
    pub lvs: Vec<LogicalVolume>,
    /// Where the metadata used was read (volume name, area offset).
    #[serde(serialize_with = "crate::volume::escaped")]
    pub metadata_from: String,
}

/// A PV found on one volume of the disk, with its metadata texts.
pub struct FoundPv {
    /// The volume's name (`p2`).
    pub volume: String,
    /// Its start and length on the disk.
    pub start: u64,
    pub len: u64,
    pub label: label::PvLabel,
    pub texts: Vec<label::MetadataText>,
}

/// Reads the PV label and metadata of a volume identified as
/// `LVM2_member`.
///
/// # Errors
/// Read errors.
pub fn read_pv(
    src: &dyn BlockSource,
    volume: &str,
    start: u64,
    problems: &mut Vec<Problem>,
) -> Result<Option<FoundPv>, BlockError> {
    let Some(l) = label::read_label(src, problems, volume)? else {
        return Ok(None);
    };
    let texts = label::read_texts(src, &l, problems, volume)?;
    Ok(Some(FoundPv {
        volume: volume.to_owned(),
        start,
        len: src.len(),
        label: l,
        texts,
    }))
}

/// The volume groups of the PVs found: each VG from the text with the
/// highest sequence number among its PVs, its LVs' geometry resolved.
pub fn groups(
    found: &[FoundPv],
    problems: &mut Vec<Problem>,
) -> Vec<(VolumeGroup, Vec<Option<super::slice::Geometry>>)> {
    // (vg uuid) -> (seqno, parsed section, where)
    let mut best: Vec<(String, u64, metadata::Section, String)> = Vec::new();
    for pv in found {
        for t in &pv.texts {
            let place = format!("{}: LVM metadata at {:#x}", pv.volume, t.area);
            let top = match metadata::parse(&t.text) {
                Ok(top) => top,
                Err(e) => {
                    problems.push(Problem::new(
                        place,
                        Some(pv.start.saturating_add(t.area)),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let Some(vg) = top.sections().next() else {
                problems.push(Problem::new(place, None, "no volume group section"));
                continue;
            };
            let uuid = vg.str("id").unwrap_or_default();
            let seqno = vg.u64("seqno", &vg.name).unwrap_or(0);
            match best.iter_mut().find(|b| b.0 == uuid) {
                Some(b) if b.1 >= seqno => {}
                Some(b) => *b = (uuid, seqno, vg.clone(), place),
                None => best.push((uuid, seqno, vg.clone(), place)),
            }
        }
    }
    best.into_iter()
        .filter_map(|(_, _, section, place)| {
            match segments::volume_group(&section, found, &place, problems) {
                Ok(vg) => Some(vg),
                Err(e) => {
                    problems.push(Problem::new(place, None, e.to_string()));
                    None
                }
            }
        })
        .collect()
}
