//! The volume stack: what lies between the block reader and the
//! filesystems. A disk may hold a partition table (MBR with logical
//! partitions, or GPT), partitions may be LVM physical volumes, and
//! volume groups hold logical volumes; each of these is a [`Volume`], and
//! each volume is read as a [`BlockSource`] of its own ([`VolumeSource`])
//! over the disk, so the layered reader still records which chain layer
//! served every byte.
//!
//! The library API (the CLI and the TUI both use it):
//!
//! - [`scan`] a disk (normally a chain's [`crate::block::layered::LayeredReader`])
//!   into a [`VolumeTree`]: the table, the partitions, the VGs and LVs, what
//!   each volume holds ([`identify::Content`]) and every problem found;
//! - [`VolumeTree::find`] a volume by the name `volumes` prints (`disk`,
//!   `p1`, `vg0/root`), and [`VolumeTree::open`] it as an
//!   `Arc<dyn BlockSource>`; [`Volume::geometry`] says where each of its
//!   bytes lies on the disk ([`Geometry::to_disk`], [`Geometry::disk_areas`]);
//! - [`VolumeTree::choose`]: the volume a command uses, given `--volume`
//!   or the default rule (the one volume holding a filesystem);
//! - [`layers::shares`]: how many bytes of a volume each chain layer holds.
//!
//! What this module does not own: decoding the filesystems (that is
//! [`crate::fs`]) and reading the layers (that is [`crate::block`]).
//! Nothing here writes.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::Arc;

use serde::Serialize;

use crate::block::{BlockError, BlockSource};

mod bytes;
pub mod gpt;
pub mod gpt_types;
pub mod identify;
pub mod layers;
pub mod lvm;
pub mod mbr;
pub mod slice;
pub mod table;

pub use identify::Content;
pub use slice::{Geometry, Segment, VolumeSource};
pub use table::{Partition, Problem, Table};

/// Bytes from the disk (a label, a partition name), kept raw; shown and
/// serialized escaped for a terminal ([`crate::escape::printable_bytes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Text(pub Vec<u8>);

impl Text {
    pub fn raw(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Text {
    fn from(v: Vec<u8>) -> Self {
        Text(v)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::escape::printable_bytes(&self.0))
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::escape::printable_bytes(&self.0))
    }
}

/// Serializes a string that came from the disk escaped for a terminal
/// (JSON carries it too; serde would pass control characters through).
pub(crate) fn escaped<S: serde::Serializer>(s: &str, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&crate::escape::printable(s))
}

/// [`escaped`] for an optional string.
pub(crate) fn escaped_opt<S: serde::Serializer>(
    s: &Option<String>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_some(&crate::escape::printable(s)),
        None => ser.serialize_none(),
    }
}

/// [`escaped`] for a list of strings.
pub(crate) fn escaped_list<S: serde::Serializer>(l: &[String], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(l.iter().map(|s| crate::escape::printable(s)))
}

/// Errors of choosing and opening volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Block(#[from] BlockError),

    /// No volume has that name.
    #[error("{disk}: no volume {name:?}; the disk has {available}")]
    NotFound {
        disk: String,
        name: String,
        available: String,
    },

    /// The volume exists but cannot be read.
    #[error("{disk}: volume {name}: {why}")]
    Unsupported {
        disk: String,
        name: String,
        why: String,
    },

    /// No volume holds a filesystem layerscope reads.
    #[error("{disk}: no volume holds a filesystem layerscope reads; the disk has {available}")]
    NoFilesystem { disk: String, available: String },

    /// Several do: the user chooses.
    #[error(
        "{disk}: several volumes hold a filesystem: {candidates}; choose one with --volume NAME"
    )]
    Ambiguous { disk: String, candidates: String },
}

/// What a volume is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The whole disk.
    Disk,
    /// A partition of the disk's table.
    Partition(Partition),
    /// A logical volume of an LVM volume group.
    Logical {
        #[serde(serialize_with = "escaped")]
        vg: String,
        lv: lvm::LogicalVolume,
    },
}

/// A volume: the whole disk, a partition or a logical volume.
#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    /// The name commands take with `--volume`: `disk`, `p1`, `vg0/root`.
    #[serde(serialize_with = "escaped")]
    pub name: String,
    /// `"disk"`, `{"partition": {…}}` or `{"logical": {"vg", "lv"}}`.
    pub role: Role,
    /// Its size in bytes.
    pub len: u64,
    /// Where its bytes are on the disk (`None`: it cannot be read, see
    /// `unsupported`).
    #[serde(skip)]
    pub geometry: Option<Arc<Geometry>>,
    /// What it holds.
    pub content: Content,
    /// Why it cannot be read.
    #[serde(serialize_with = "escaped_opt")]
    pub unsupported: Option<String>,
}

impl Volume {
    /// Where its bytes are on the disk, when it can be read.
    pub fn geometry(&self) -> Option<&Arc<Geometry>> {
        self.geometry.as_ref()
    }

    /// The volume as a block source over `disk` (the disk it was found
    /// on, or the same disk as of another layer, or one layer alone: the
    /// geometry is the same).
    ///
    /// # Errors
    /// [`VolumeError::Unsupported`] when it cannot be read.
    pub fn source_over(
        &self,
        disk: Arc<dyn BlockSource>,
    ) -> Result<Arc<dyn BlockSource>, VolumeError> {
        let g = self
            .geometry
            .clone()
            .ok_or_else(|| VolumeError::Unsupported {
                disk: disk.name().to_owned(),
                name: self.name.clone(),
                why: self
                    .unsupported
                    .clone()
                    .unwrap_or_else(|| "cannot be read".into()),
            })?;
        if self.role == Role::Disk && g.len() == disk.len() {
            return Ok(disk);
        }
        let name = format!("{} {}", disk.name(), self.name);
        Ok(Arc::new(VolumeSource::new(disk, g, name)))
    }

    /// One line saying what it is, for lists in messages.
    pub fn summary(&self) -> String {
        let what = match (&self.content.kind, &self.unsupported) {
            (Some(k), _) => (*k).to_owned(),
            (None, Some(u)) => u.clone(),
            (None, None) => "unknown content".into(),
        };
        format!("{} ({what}, {})", self.name, crate::units::human(self.len))
    }
}

/// A disk's volumes.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeTree {
    /// The disk's name (for messages).
    pub disk_name: String,
    pub disk_len: u64,
    /// The partition table, if any.
    pub table: Option<Table>,
    /// The VGs found on the disk's PVs.
    pub groups: Vec<lvm::VolumeGroup>,
    /// Every volume: `disk` first, then the partitions, then the LVs.
    pub volumes: Vec<Volume>,
    /// Problems outside the table (LVM labels and metadata).
    pub problems: Vec<Problem>,
}

/// Scans `disk` for its volume stack and identifies each volume.
///
/// # Errors
/// Read errors only: damaged tables and metadata are problems in the tree.
pub fn scan(disk: Arc<dyn BlockSource>) -> Result<VolumeTree, BlockError> {
    let size = disk.len();
    let mut volumes = Vec::new();
    let whole = Geometry::window(0, size);
    let content = identify::identify(disk.as_ref())?;
    let mut sector = [0u8; 512];
    let table = if size >= 1024 {
        disk.read_at(0, &mut sector)?;
        let boot_sector = matches!(content.kind, Some("vfat" | "ntfs"));
        if mbr::is_protective(&sector) {
            Some(gpt::read(disk.as_ref())?)
        } else if !boot_sector && mbr::looks_like_table(&sector) {
            Some(mbr::read(disk.as_ref(), &sector)?)
        } else {
            None
        }
    } else {
        None
    };
    volumes.push(Volume {
        name: "disk".into(),
        role: Role::Disk,
        len: size,
        geometry: Some(Arc::new(whole)),
        content,
        unsupported: None,
    });
    if let Some(t) = &table {
        for p in &t.partitions {
            let g = Arc::new(Geometry::window(p.start, p.len));
            let name = format!("p{}", p.number);
            let (content, unsupported) = if p.role == gpt_types::Role::Extended {
                (
                    Content::default(),
                    Some("an extended partition (a container of logical partitions)".into()),
                )
            } else {
                let src =
                    VolumeSource::new(disk.clone(), g.clone(), format!("{} {name}", disk.name()));
                (identify::identify(&src)?, None)
            };
            volumes.push(Volume {
                name,
                role: Role::Partition(p.clone()),
                len: p.len,
                geometry: unsupported.is_none().then_some(g),
                content,
                unsupported,
            });
        }
    }
    // LVM: PVs on the whole disk (no table) or on partitions.
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for v in &volumes {
        if v.content.kind != Some("LVM2_member") || (v.role == Role::Disk && table.is_some()) {
            continue;
        }
        let Some(g) = v.geometry() else { continue };
        let src = VolumeSource::new(disk.clone(), g.clone(), v.name.clone());
        let start = g.window_start().unwrap_or(0);
        found.extend(lvm::read_pv(&src, &v.name, start, &mut problems)?);
    }
    let mut groups = Vec::new();
    for (vg, geometries) in lvm::groups(&found, &mut problems) {
        for (lv, g) in vg.lvs.iter().zip(geometries) {
            let g = g.map(Arc::new);
            let name = format!("{}/{}", vg.name, lv.name);
            let content = match &g {
                Some(g) => {
                    let src = VolumeSource::new(
                        disk.clone(),
                        g.clone(),
                        format!("{} {name}", disk.name()),
                    );
                    identify::identify(&src)?
                }
                None => Content::default(),
            };
            volumes.push(Volume {
                name,
                len: g.as_ref().map_or(lv.size.unwrap_or(0), |g| g.len()),
                role: Role::Logical {
                    vg: vg.name.clone(),
                    lv: lv.clone(),
                },
                geometry: g,
                content,
                unsupported: lv.unsupported.clone(),
            });
        }
        groups.push(vg);
    }
    Ok(VolumeTree {
        disk_name: disk.name().to_owned(),
        disk_len: size,
        table,
        groups,
        volumes,
        problems,
    })
}

impl VolumeTree {
    /// The volume named `name` (`disk`, `p1`, `vg0/root`; a bare number
    /// `N` is partition `pN`, for `--partition N`).
    pub fn find(&self, name: &str) -> Option<&Volume> {
        let name = normalize(name);
        self.volumes.iter().find(|v| v.name == name)
    }

    /// Every problem found: the table's, then LVM's.
    pub fn all_problems(&self) -> Vec<&Problem> {
        self.table
            .iter()
            .flat_map(|t| t.problems.iter())
            .chain(self.problems.iter())
            .collect()
    }

    /// The volumes, listed for a message.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self
            .volumes
            .iter()
            .filter(|v| {
                !(v.role == Role::Disk && self.volumes.len() > 1 && v.content.kind.is_none())
            })
            .map(Volume::summary)
            .collect();
        crate::escape::printable(&list.join(", "))
    }

    /// Opens volume `name` over the disk it was scanned from.
    ///
    /// # Errors
    /// No such volume; a volume that cannot be read.
    pub fn open(
        &self,
        disk: Arc<dyn BlockSource>,
        name: &str,
    ) -> Result<Arc<dyn BlockSource>, VolumeError> {
        let v = self.find(name).ok_or_else(|| self.not_found(name))?;
        v.source_over(disk)
    }

    fn not_found(&self, name: &str) -> VolumeError {
        VolumeError::NotFound {
            disk: self.disk_name.clone(),
            name: normalize(name),
            available: self.describe(),
        }
    }

    /// The volume a command works on, opened with `open` (normally
    /// `crate::fs::open`): the one named, or else the one volume whose
    /// content `open` accepts. An EFI system partition is passed over when
    /// another volume qualifies (the ESP is a boot aid, the other the
    /// system).
    ///
    /// # Errors
    /// No such volume; `open`'s error for a named one (wrapped by the
    /// caller's `map`); none or several that qualify.
    pub fn choose<T, E>(
        &self,
        disk: &Arc<dyn BlockSource>,
        name: Option<&str>,
        open: impl Fn(Arc<dyn BlockSource>) -> Result<T, E>,
    ) -> Result<(&Volume, T), ChooseError<E>> {
        if let Some(name) = name {
            let v = self
                .find(name)
                .ok_or_else(|| ChooseError::Volume(self.not_found(name)))?;
            let src = v.source_over(disk.clone()).map_err(ChooseError::Volume)?;
            return open(src)
                .map(|t| (v, t))
                .map_err(|e| ChooseError::Open(v.name.clone(), e));
        }
        // A bare disk: its filesystem's own error says most.
        if let ([only], None) = (self.volumes.as_slice(), &self.table) {
            let src = only
                .source_over(disk.clone())
                .map_err(ChooseError::Volume)?;
            return open(src)
                .map(|t| (only, t))
                .map_err(|e| ChooseError::Open(only.name.clone(), e));
        }
        let mut found: Vec<(&Volume, T)> = Vec::new();
        for v in &self.volumes {
            if v.role == Role::Disk && self.table.is_some() && !v.content.is_filesystem() {
                continue;
            }
            if !v.content.is_filesystem() && v.role != Role::Disk {
                continue;
            }
            let Ok(src) = v.source_over(disk.clone()) else {
                continue;
            };
            if let Ok(t) = open(src) {
                found.push((v, t));
            }
        }
        if found.len() > 1 {
            found.retain(|(v, _)| !matches!(&v.role, Role::Partition(p) if p.role == gpt_types::Role::EfiSystem));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ChooseError::Volume(VolumeError::NoFilesystem {
                disk: self.disk_name.clone(),
                available: self.describe(),
            })),
            _ => Err(ChooseError::Volume(VolumeError::Ambiguous {
                disk: self.disk_name.clone(),
                candidates: crate::escape::printable(
                    &found
                        .iter()
                        .map(|(v, _)| v.summary())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            })),
        }
    }
}

/// Scans `disk` and opens its volume `name`: for viewers that keep one
/// disk per layer (the TUI's worker) and reopen the volume on each.
///
/// # Errors
/// Read errors; no such volume; a volume that cannot be read.
pub fn open_named(
    disk: Arc<dyn BlockSource>,
    name: &str,
) -> Result<Arc<dyn BlockSource>, VolumeError> {
    let tree = scan(disk.clone())?;
    tree.open(disk, name)
}

/// A bare partition number `N` (from `--partition N`) is volume `pN`.
fn normalize(name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
        format!("p{name}")
    } else {
        name.to_owned()
    }
}

/// Why [`VolumeTree::choose`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError<E> {
    #[error(transparent)]
    Volume(VolumeError),
    /// The named volume's content did not open.
    #[error("volume {0}")]
    Open(String, #[source] E),
}

#[cfg(test)]
mod tests;
