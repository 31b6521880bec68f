//! From a VG's metadata to where each LV's bytes are on the disk.
//!
//! A `striped` segment (linear when it has one stripe) over PVs maps to
//! one [`Segment`] whose areas are `PV start + pe_start + extent *
//! extent_size` on the disk; every product and sum is checked, and a stripe
//! that passes its PV's extents or the volume holding the PV is an error
//! naming the VG, LV, segment and stripe. A linear segment may also name
//! another LV (LVM's stacking); those references are followed with a
//! depth bound and loop detection. Other segment types are not supported.
use super::super::slice::{Geometry, Segment};
use super::super::table::Problem;
use super::metadata::{FieldError, Section, Value};
use super::{FoundPv, LogicalVolume, LvSegment, PhysicalVolume, VolumeGroup};

/// Deepest chain of LVs over LVs followed.
pub const MAX_STACK: usize = 8;
/// Most stripes in one segment (LVM allows 128).
pub const MAX_STRIPES: u64 = 128;
/// Most segments per LV.
pub const MAX_SEGMENTS: usize = 65536;

const SECTOR: u64 = 512;

fn ferr(path: &str, detail: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Decodes a VG section and resolves the geometry of each of its LVs
/// (`None` where an LV cannot be opened; its `unsupported` says why).
///
/// # Errors
/// A VG whose extent size or PV list cannot be read.
pub fn volume_group(
    vg: &Section,
    found: &[FoundPv],
    place: &str,
    problems: &mut Vec<Problem>,
) -> Result<(VolumeGroup, Vec<Option<Geometry>>), FieldError> {
    let name = vg.name.clone();
    let extent_sectors = vg.u64("extent_size", &name)?;
    let extent_size = extent_sectors
        .checked_mul(SECTOR)
        .filter(|&e| e > 0)
        .ok_or_else(|| {
            ferr(
                &format!("{name}: extent_size"),
                format!("{extent_sectors} sectors"),
            )
        })?;
    let mut pvs = Vec::new();
    if let Some(list) = vg.section("physical_volumes") {
        for pv in list.sections() {
            let path = format!("{name}/{}", pv.name);
            let uuid = pv.str("id").unwrap_or_default();
            let pe_start = pv
                .u64("pe_start", &path)?
                .checked_mul(SECTOR)
                .ok_or_else(|| ferr(&path, "pe_start past 2^64 bytes"))?;
            let holder = found
                .iter()
                .find(|f| super::label::format_uuid(f.label.uuid.as_bytes()) == uuid);
            if holder.is_none() {
                problems.push(Problem::new(
                    format!("{place}: PV {} ({uuid})", pv.name),
                    None,
                    "not found on this disk: LVs on it cannot be read",
                ));
            }
            pvs.push(PhysicalVolume {
                key: pv.name.clone(),
                uuid,
                device: pv.str("device").unwrap_or_default(),
                pe_start,
                pe_count: pv.u64("pe_count", &path)?,
                volume: holder.map(|h| h.volume.clone()),
                found_at: holder.map(|h| (h.start, h.len)),
            });
        }
    }
    let lv_sections: Vec<&Section> = vg
        .section("logical_volumes")
        .map(|l| l.sections().collect())
        .unwrap_or_default();
    let mut lvs: Vec<LogicalVolume> = lv_sections
        .iter()
        .map(|s| describe(s, &name, extent_size))
        .collect();
    // Snapshots: the COW store of an old-style snapshot holds the
    // snapshot's exceptions, not its content.
    for s in &lv_sections {
        for seg in s.sections() {
            if seg.str("type").as_deref() == Some("snapshot") {
                if let (Some(cow), Some(origin)) = (seg.str("cow_store"), seg.str("origin")) {
                    if let Some(lv) = lvs.iter_mut().find(|l| l.name == cow) {
                        lv.layout = "snapshot".into();
                        lv.unsupported = Some(format!(
                            "a snapshot of {origin}: snapshots are not supported"
                        ));
                    }
                }
            }
        }
    }
    let ctx = Ctx {
        vg: &name,
        extent_size,
        pvs: &pvs,
        lvs: &lvs,
    };
    let mut geometries = Vec::new();
    for (i, lv) in lvs.iter().enumerate() {
        if lv.unsupported.is_some() {
            geometries.push(None);
            continue;
        }
        let mut stack = Vec::new();
        geometries.push(match ctx.resolve(i, &mut stack) {
            Ok(segs) => match Geometry::from_segments(segs) {
                Ok(g) => Some(g),
                Err(e) => {
                    problems.push(Problem::new(
                        format!("LV {name}/{}", lv.name),
                        None,
                        e.to_string(),
                    ));
                    None
                }
            },
            Err(e) => {
                problems.push(Problem::new(
                    format!("LV {name}/{}", lv.name),
                    None,
                    e.clone(),
                ));
                None
            }
        });
    }
    for (lv, g) in lvs.iter_mut().zip(&geometries) {
        if g.is_none() && lv.unsupported.is_none() {
            lv.unsupported = Some("cannot be read (see the problems)".into());
        }
    }
    Ok((
        VolumeGroup {
            name,
            uuid: vg.str("id").unwrap_or_default(),
            seqno: vg.u64("seqno", &vg.name).unwrap_or(0),
            extent_size,
            pvs,
            lvs,
            metadata_from: place.to_owned(),
        },
        geometries,
    ))
}

/// An LV's entry, its segments as written, and whether its types are
/// supported.
fn describe(s: &Section, vg: &str, extent_size: u64) -> LogicalVolume {
    let status = s.flags("status");
    let mut segments = Vec::new();
    let mut problem = None;
    for seg in s.sections().take(MAX_SEGMENTS) {
        let path = format!("{vg}/{}/{}", s.name, seg.name);
        let kind = seg.str("type").unwrap_or_default();
        let read = || -> Result<LvSegment, FieldError> {
            let stripe_count = if kind == "striped" {
                seg.u64("stripe_count", &path)?
            } else {
                0
            };
            let mut stripes = Vec::new();
            if let Some(Value::List(l)) = seg.value("stripes") {
                for pair in l
                    .chunks(2)
                    .take(usize::try_from(MAX_STRIPES).unwrap_or(128))
                {
                    if let [Value::Str(n), Value::Num(e)] = pair {
                        let e = e.parse::<u64>().map_err(|_| {
                            ferr(
                                &format!("{path}: stripes"),
                                format!("extent {e} is not a number below 2^64"),
                            )
                        })?;
                        stripes.push((String::from_utf8_lossy(n).into_owned(), e));
                    }
                }
            }
            let stripe_size = match seg.value("stripe_size") {
                Some(_) => Some(
                    seg.u64("stripe_size", &path)?
                        .checked_mul(SECTOR)
                        .ok_or_else(|| ferr(&path, "stripe_size past 2^64 bytes"))?,
                ),
                None => None,
            };
            Ok(LvSegment {
                start_extent: seg.u64("start_extent", &path)?,
                extent_count: seg.u64("extent_count", &path)?,
                kind: kind.clone(),
                stripe_count,
                stripe_size,
                stripes,
            })
        };
        match read() {
            Ok(l) => segments.push(l),
            Err(e) => {
                problem.get_or_insert(e.to_string());
            }
        }
    }
    let extents = segments
        .iter()
        .try_fold(0u64, |a, s| a.checked_add(s.extent_count));
    let other = segments
        .iter()
        .find(|s| s.kind != "striped")
        .map(|s| s.kind.clone());
    let layout = match &other {
        Some(k) => k.clone(),
        None if segments.iter().any(|s| s.stripe_count > 1) => "striped".into(),
        None => "linear".into(),
    };
    let unsupported = match (problem, &other, extents) {
        (Some(p), _, _) => Some(p),
        (None, Some(k), _) => Some(format!("segment type {k:?}: not supported")),
        (None, None, None) => Some(format!("{vg}/{}: the extent count passes 2^64", s.name)),
        _ => None,
    };
    LogicalVolume {
        name: s.name.clone(),
        uuid: s.str("id").unwrap_or_default(),
        visible: status.iter().any(|f| f == "VISIBLE"),
        status,
        layout,
        extents: extents.unwrap_or(u64::MAX),
        size: extents.and_then(|e| e.checked_mul(extent_size)),
        segments,
        unsupported,
    }
}

struct Ctx<'a> {
    vg: &'a str,
    extent_size: u64,
    pvs: &'a [PhysicalVolume],
    lvs: &'a [LogicalVolume],
}

impl Ctx<'_> {
    /// The disk segments of LV `i`; `stack` holds the LVs being resolved
    /// (a reference back into it is a loop).
    fn resolve(&self, i: usize, stack: &mut Vec<usize>) -> Result<Vec<Segment>, String> {
        let lv = self.lvs.get(i).ok_or("no such LV")?;
        if stack.contains(&i) {
            let mut names: Vec<&str> = stack
                .iter()
                .filter_map(|&j| self.lvs.get(j).map(|l| l.name.as_str()))
                .collect();
            names.push(&lv.name);
            return Err(format!("a loop of LV references: {}", names.join(" -> ")));
        }
        if stack.len() >= MAX_STACK {
            return Err(format!("LVs stacked deeper than {MAX_STACK}"));
        }
        if let Some(why) = &lv.unsupported {
            return Err(format!("{}/{}: {why}", self.vg, lv.name));
        }
        stack.push(i);
        let out = self.segments(lv, stack);
        stack.pop();
        out
    }

    fn segments(&self, lv: &LogicalVolume, stack: &mut Vec<usize>) -> Result<Vec<Segment>, String> {
        let mut out = Vec::new();
        let mut next_extent = 0u64;
        for (k, seg) in lv.segments.iter().enumerate() {
            let path = format!("{}/{} segment{}", self.vg, lv.name, k.saturating_add(1));
            if seg.start_extent != next_extent {
                return Err(format!(
                    "{path}: starts at extent {}, expected {next_extent}",
                    seg.start_extent
                ));
            }
            next_extent = seg
                .start_extent
                .checked_add(seg.extent_count)
                .ok_or_else(|| format!("{path}: extents pass 2^64"))?;
            let n = seg.stripe_count;
            if n == 0 || n > MAX_STRIPES || u64::try_from(seg.stripes.len()).ok() != Some(n) {
                return Err(format!(
                    "{path}: stripe_count {n} with {} stripes listed",
                    seg.stripes.len()
                ));
            }
            if seg.extent_count == 0 || seg.extent_count.checked_rem(n) != Some(0) {
                return Err(format!(
                    "{path}: {} extents do not divide among {n} stripes",
                    seg.extent_count
                ));
            }
            let start = seg
                .start_extent
                .checked_mul(self.extent_size)
                .ok_or_else(|| format!("{path}: start past 2^64 bytes"))?;
            let len = seg
                .extent_count
                .checked_mul(self.extent_size)
                .ok_or_else(|| {
                    format!(
                        "{path}: {} extents of {} bytes pass 2^64 bytes",
                        seg.extent_count, self.extent_size
                    )
                })?;
            let per_stripe = seg.extent_count.checked_div(n).unwrap_or(0);
            if n == 1 {
                if let Some((name, first)) = seg.stripes.first() {
                    if let Some(j) = self.lvs.iter().position(|l| &l.name == name) {
                        out.extend(self.over_lv(j, *first, per_stripe, start, &path, stack)?);
                        continue;
                    }
                }
            }
            let mut areas = Vec::new();
            for (s, (pv_key, first)) in seg.stripes.iter().enumerate() {
                areas.push(self.pv_area(
                    pv_key,
                    *first,
                    per_stripe,
                    &format!("{path} stripe {s}"),
                )?);
            }
            let stripe_size = if n == 1 {
                len
            } else {
                seg.stripe_size
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("{path}: no stripe_size"))?
            };
            out.push(Segment {
                start,
                len,
                stripe_size,
                areas,
            });
        }
        Ok(out)
    }

    /// The disk offset of `count` extents from `first` on PV `key`.
    fn pv_area(&self, key: &str, first: u64, count: u64, path: &str) -> Result<u64, String> {
        let pv =
            self.pvs.iter().find(|p| p.key == key).ok_or_else(|| {
                format!("{path}: names {key:?}, neither a PV nor an LV of the VG")
            })?;
        let end = first
            .checked_add(count)
            .ok_or_else(|| format!("{path}: extents pass 2^64"))?;
        if end > pv.pe_count {
            return Err(format!(
                "{path}: extents {first}..{end} pass the end of PV {key} ({} extents)",
                pv.pe_count
            ));
        }
        let (start, len) = pv
            .found_at
            .ok_or_else(|| format!("{path}: PV {key} ({}) is not on this disk", pv.uuid))?;
        let rel = first
            .checked_mul(self.extent_size)
            .and_then(|o| o.checked_add(pv.pe_start))
            .ok_or_else(|| format!("{path}: offset past 2^64"))?;
        let bytes = count
            .checked_mul(self.extent_size)
            .ok_or_else(|| format!("{path}: size past 2^64"))?;
        if rel.checked_add(bytes).is_none_or(|e| e > len) {
            return Err(format!(
                "{path}: bytes {rel:#x}..+{bytes:#x} pass the end of PV {key} on {} ({len} bytes)",
                pv.volume.as_deref().unwrap_or("?")
            ));
        }
        start
            .checked_add(rel)
            .ok_or_else(|| format!("{path}: offset past 2^64"))
    }

    /// A linear segment over `count` extents of LV `j` from `first`: the
    /// pieces of that LV's own segments, which must be linear.
    fn over_lv(
        &self,
        j: usize,
        first: u64,
        count: u64,
        at: u64,
        path: &str,
        stack: &mut Vec<usize>,
    ) -> Result<Vec<Segment>, String> {
        let inner = self.resolve(j, stack)?;
        let from = first
            .checked_mul(self.extent_size)
            .ok_or_else(|| format!("{path}: offset past 2^64"))?;
        let len = count
            .checked_mul(self.extent_size)
            .ok_or_else(|| format!("{path}: size past 2^64"))?;
        let to = from
            .checked_add(len)
            .ok_or_else(|| format!("{path}: size past 2^64"))?;
        let mut out = Vec::new();
        let mut pos = at;
        for s in inner {
            let s_end = s.start.saturating_add(s.len);
            let (lo, hi) = (s.start.max(from), s_end.min(to));
            if lo >= hi {
                continue;
            }
            let [disk] = s.areas.as_slice() else {
                return Err(format!("{path}: over a striped LV: not supported"));
            };
            let d = disk.saturating_add(lo.saturating_sub(s.start));
            out.push(Segment::linear(pos, hi.saturating_sub(lo), d));
            pos = pos.saturating_add(hi.saturating_sub(lo));
        }
        if pos.checked_sub(at) != Some(len) {
            return Err(format!(
                "{path}: extents {first}.. pass the end of the LV it names"
            ));
        }
        Ok(out)
    }
}
