//! Where a volume's bytes lie on the disk ([`Geometry`]), and a volume as a
//! [`BlockSource`] of its own ([`VolumeSource`]).
//!
//! A partition is one window of the disk; a logical volume is a list of
//! segments, each linear or striped over areas of the disk. Both read
//! through the disk they were found on (normally the chain's layered
//! reader), so every byte a filesystem reads is still served, and recorded
//! in the hit map, by the chain layer that holds it.
//!
//! Striping is computed, never expanded: a 1 TiB striped volume costs its
//! segment list, not one entry per stripe chunk.
use std::sync::Arc;

use crate::block::{check_range, BlockError, BlockSource, Extent, Status};

/// A run of the volume that lies contiguously on the disk: either one
/// segment (linear) or `stripes` areas of the disk, `stripe_size` bytes
/// at a time, round-robin (LVM's striped segment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Where the segment starts in the volume.
    pub start: u64,
    /// Its length in bytes (a multiple of `areas.len()` stripes).
    pub len: u64,
    /// Bytes per stripe chunk; for a linear segment, `len`.
    pub stripe_size: u64,
    /// The disk offset of each stripe's area (one for linear).
    pub areas: Vec<u64>,
}

impl Segment {
    /// A linear segment: `len` bytes at `disk` on the disk.
    pub fn linear(start: u64, len: u64, disk: u64) -> Segment {
        Segment {
            start,
            len,
            stripe_size: len,
            areas: vec![disk],
        }
    }

    /// Bytes of each area (the segment divided among its stripes).
    pub fn area_len(&self) -> u64 {
        let n = u64::try_from(self.areas.len()).unwrap_or(1).max(1);
        self.len.checked_div(n).unwrap_or(0)
    }

    /// The disk offset of byte `rel` of the segment, and how many bytes
    /// from there lie contiguously on the disk (to the end of the stripe
    /// chunk or of the segment).
    fn map(&self, rel: u64) -> Option<(u64, u64)> {
        if rel >= self.len {
            return None;
        }
        let left = self.len.checked_sub(rel)?;
        let n = u64::try_from(self.areas.len()).ok()?;
        if n <= 1 {
            let disk = self.areas.first()?.checked_add(rel)?;
            return Some((disk, left));
        }
        let size = self.stripe_size;
        let chunk = rel.checked_div(size)?;
        let within = rel.checked_rem(size)?;
        let stripe = usize::try_from(chunk.checked_rem(n)?).ok()?;
        let row = chunk.checked_div(n)?;
        let disk = self
            .areas
            .get(stripe)?
            .checked_add(row.checked_mul(size)?)?
            .checked_add(within)?;
        Some((disk, size.checked_sub(within)?.min(left)))
    }
}

/// Where every byte of a volume lies on the disk: its segments, sorted and
/// contiguous from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    segments: Vec<Segment>,
    len: u64,
}

/// Geometry that cannot be right (a caller bug or a damaged table that
/// slipped through its checks).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("segment at volume offset {start:#x}: {detail}")]
pub struct GeometryError {
    pub start: u64,
    pub detail: String,
}

impl Geometry {
    /// A window `[start, start + len)` of the disk (a partition).
    pub fn window(start: u64, len: u64) -> Geometry {
        Geometry {
            segments: vec![Segment::linear(0, len, start)],
            len,
        }
    }

    /// Segments in volume order, each starting where the previous ends.
    ///
    /// # Errors
    /// A gap, an empty or ragged striped segment, an area whose end
    /// overflows.
    pub fn from_segments(segments: Vec<Segment>) -> Result<Geometry, GeometryError> {
        let mut at = 0u64;
        for s in &segments {
            let bad = |detail: String| GeometryError {
                start: s.start,
                detail,
            };
            if s.start != at {
                return Err(bad(format!("starts at {:#x}, expected {at:#x}", s.start)));
            }
            let n = u64::try_from(s.areas.len()).unwrap_or(0);
            if n == 0 || s.stripe_size == 0 {
                return Err(bad("no areas, or a stripe size of 0".into()));
            }
            if s.len.checked_rem(n) != Some(0) {
                return Err(bad(format!(
                    "{} bytes do not divide among {n} stripes",
                    s.len
                )));
            }
            let area = s.area_len();
            if s.areas.iter().any(|a| a.checked_add(area).is_none()) {
                return Err(bad("an area ends past 2^64".into()));
            }
            at = at
                .checked_add(s.len)
                .ok_or_else(|| bad("the volume ends past 2^64".into()))?;
        }
        Ok(Geometry { segments, len: at })
    }

    /// The volume's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty volume.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The disk offset of volume byte `offset`, and how many bytes from
    /// there are contiguous on the disk; `None` past the end.
    pub fn to_disk(&self, offset: u64) -> Option<(u64, u64)> {
        let i = self
            .segments
            .partition_point(|s| s.start.saturating_add(s.len) <= offset);
        let s = self.segments.get(i)?;
        s.map(offset.checked_sub(s.start)?)
    }

    /// The disk ranges `(offset, len)` the volume occupies: one per
    /// segment area, in volume order (a striped segment's areas each once,
    /// whatever its chunk count).
    pub fn disk_areas(&self) -> Vec<(u64, u64)> {
        self.segments
            .iter()
            .flat_map(|s| s.areas.iter().map(move |&a| (a, s.area_len())))
            .collect()
    }

    /// Where on the disk the volume starts, when it is one window.
    pub fn window_start(&self) -> Option<u64> {
        match self.segments.as_slice() {
            [only] if only.areas.len() == 1 => only.areas.first().copied(),
            [] => Some(0),
            _ => None,
        }
    }
}

/// A volume read as a disk of its own, through the disk it lies on.
pub struct VolumeSource {
    inner: Arc<dyn BlockSource>,
    geometry: Arc<Geometry>,
    name: String,
}

impl VolumeSource {
    /// The volume of `geometry` over `inner` (the whole disk, or one layer
    /// of it alone: the geometry is the same whichever view is read).
    pub fn new(inner: Arc<dyn BlockSource>, geometry: Arc<Geometry>, name: String) -> Self {
        VolumeSource {
            inner,
            geometry,
            name,
        }
    }

    /// Where the volume's bytes are on the disk.
    pub fn geometry(&self) -> &Arc<Geometry> {
        &self.geometry
    }

    /// The first contiguous disk run of `[offset, offset + len)`.
    fn run(&self, offset: u64, len: u64) -> Result<(u64, u64), BlockError> {
        let (disk, n) = self
            .geometry
            .to_disk(offset)
            .ok_or_else(|| BlockError::Internal {
                what: format!("{}: offset {offset:#x} maps to no segment", self.name),
            })?;
        Ok((disk, n.min(len)))
    }
}

impl BlockSource for VolumeSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.geometry.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let total = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        check_range(&self.name, self.len(), offset, total)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            let left = u64::try_from(buf.len().saturating_sub(done)).unwrap_or(u64::MAX);
            let (disk, n) = self.run(pos, left)?;
            let n = usize::try_from(n).unwrap_or(usize::MAX).max(1);
            let end = done.saturating_add(n).min(buf.len());
            let piece = buf.get_mut(done..end).ok_or_else(|| BlockError::Internal {
                what: format!("{}: read split at {done}", self.name),
            })?;
            self.inner.read_at(disk, piece)?;
            done = end;
        }
        Ok(())
    }

    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        let mut batch: Vec<(u64, &mut [u8])> = Vec::new();
        for (offset, buf) in reqs.iter_mut() {
            let offset = *offset;
            let total = u64::try_from(buf.len()).unwrap_or(u64::MAX);
            check_range(&self.name, self.len(), offset, total)?;
            let mut pos = offset;
            let mut rest: &mut [u8] = buf;
            while !rest.is_empty() {
                let left = u64::try_from(rest.len()).unwrap_or(u64::MAX);
                let (disk, n) = self.run(pos, left)?;
                let n = usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .clamp(1, rest.len());
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                batch.push((disk, piece));
                pos = pos.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            }
        }
        self.inner.read_many(&mut batch)
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn held(&self, offset: u64, max: u64) -> Option<bytes::Bytes> {
        let max = max.min(self.len().checked_sub(offset)?);
        if max == 0 {
            return None;
        }
        let (disk, n) = self.run(offset, max).ok()?;
        self.inner.held(disk, n)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        check_range(&self.name, self.len(), offset, len)?;
        let (disk, n) = self.run(offset, len)?;
        // A layer shorter than the disk (a smaller backing file) holds
        // nothing past its end.
        let inner_len = self.inner.len();
        if disk >= inner_len {
            return Ok(vec![Extent {
                offset,
                len: n,
                status: Status::Unallocated,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            }]);
        }
        let n = n.min(inner_len.saturating_sub(disk));
        let shift = |e: Extent| Extent {
            offset: e.offset.saturating_sub(disk).saturating_add(offset),
            ..e
        };
        Ok(self
            .inner
            .block_status(disk, n)?
            .into_iter()
            .map(shift)
            .collect())
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.name, self.len(), offset, len)?;
        let (disk, n) = self.run(offset, len)?;
        let inner_len = self.inner.len();
        if disk >= inner_len {
            return Ok(Extent {
                offset,
                len: n,
                status: Status::Unallocated,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            });
        }
        let e = self
            .inner
            .locate(disk, n.min(inner_len.saturating_sub(disk)))?;
        Ok(Extent { offset, ..e })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions
    )]
    use super::*;
    use crate::block::raw::RawFile;
    use crate::block::storage::MemStorage;

    #[test]
    fn striped_segments_map_round_robin_and_read_through() {
        // Two stripes of 4 bytes: volume bytes 0-3 on area A, 4-7 on B,
        // 8-11 on A again.
        let g = Geometry::from_segments(vec![
            Segment::linear(0, 8, 100),
            Segment {
                start: 8,
                len: 16,
                stripe_size: 4,
                areas: vec![200, 300],
            },
        ])
        .unwrap();
        assert_eq!(g.len(), 24);
        assert_eq!(g.to_disk(3), Some((103, 5)));
        assert_eq!(g.to_disk(8), Some((200, 4)));
        assert_eq!(g.to_disk(13), Some((301, 3)));
        assert_eq!(g.to_disk(16), Some((204, 4)));
        assert_eq!(g.to_disk(23), Some((307, 1)));
        assert_eq!(g.to_disk(24), None);
        assert_eq!(g.disk_areas(), vec![(100, 8), (200, 8), (300, 8)]);
        let disk: Vec<u8> = (0..400u32).map(|i| (i % 251) as u8).collect();
        let src = RawFile::new("mem", Arc::new(MemStorage::new(disk.clone())));
        let v = VolumeSource::new(Arc::new(src), Arc::new(g), "v".into());
        let mut buf = vec![0u8; 24];
        v.read_at(0, &mut buf).unwrap();
        let mut want = disk[100..108].to_vec();
        for row in 0..2 {
            want.extend_from_slice(&disk[200 + row * 4..204 + row * 4]);
            want.extend_from_slice(&disk[300 + row * 4..304 + row * 4]);
        }
        assert_eq!(buf, want);
        assert!(v.read_at(20, &mut buf).is_err());
    }

    #[test]
    fn bad_geometry_is_refused() {
        let gap = Geometry::from_segments(vec![Segment::linear(4, 4, 0)]);
        assert!(gap.unwrap_err().detail.contains("expected 0x0"));
        let ragged = Geometry::from_segments(vec![Segment {
            start: 0,
            len: 9,
            stripe_size: 4,
            areas: vec![0, 100],
        }]);
        assert!(ragged.is_err());
        let wraps = Geometry::from_segments(vec![
            Segment::linear(0, u64::MAX, 0),
            Segment::linear(u64::MAX, 2, 0),
        ]);
        assert!(wraps.is_err());
    }
}
