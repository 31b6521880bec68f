//! What a volume holds, the way `blkid -p` says it: the type (`ext4`,
//! `xfs`, `vfat`, `btrfs`, `swap`, `crypto_LUKS`, `LVM2_member`,
//! `zfs_member`, `ntfs`), with label, UUID and size where the format has
//! them. Each prober reads only the few sectors of its magic and fields;
//! nothing here decodes a filesystem (that is [`crate::fs`]): a volume that
//! layerscope does not decode is still named, "not decoded" rather than an
//! error.
use serde::Serialize;

use crate::block::{BlockError, BlockSource};

use super::bytes::{be32, be64, le16, le32, le64, slice, text, u8_at, us, uuid};
use super::Text;

/// What a volume holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Content {
    /// blkid's `TYPE` (`ext4`, `vfat`, `LVM2_member`, …); `None`: unknown.
    #[serde(rename = "type")]
    pub kind: Option<&'static str>,
    /// blkid's `USAGE`: `filesystem`, `crypto`, `raid`, `other`.
    pub usage: Option<&'static str>,
    /// blkid's `VERSION` (`FAT32`, `1.0`, `2`, `LVM2 001`).
    #[serde(serialize_with = "super::escaped_opt")]
    pub version: Option<String>,
    /// The label, raw (escaped when shown).
    pub label: Option<Text>,
    /// blkid's `UUID` (LUKS keeps it as text: escaped when shown).
    #[serde(serialize_with = "super::escaped_opt")]
    pub uuid: Option<String>,
    /// The size the structure claims, in bytes.
    pub size: Option<u64>,
    /// Other signatures also found (blkid would call the result
    /// ambivalent).
    pub also: Vec<&'static str>,
}

impl Content {
    /// True for a filesystem type (what a `--volume` default may pick).
    pub fn is_filesystem(&self) -> bool {
        self.usage == Some("filesystem")
    }
}

/// The first bytes of the volume every prober looks at (btrfs's
/// superblock ends at 68 KiB).
const HEAD: u64 = 0x11000;

/// Identifies what `src` holds.
///
/// # Errors
/// Read errors only: unknown or damaged content is `kind: None`.
pub fn identify(src: &dyn BlockSource) -> Result<Content, BlockError> {
    let n = HEAD.min(src.len());
    let mut head = vec![0u8; us(n).unwrap_or(0)];
    src.read_at(0, &mut head)?;
    let mut found: Vec<Content> = Vec::new();
    type Prober = fn(&[u8]) -> Option<Content>;
    let probers: [Prober; 8] = [luks, lvm2, ext, xfs, btrfs, ntfs_boot, vfat, swap];
    for p in probers {
        found.extend(p(&head));
    }
    if found.is_empty() {
        found.extend(zfs(src)?);
    }
    let mut iter = found.into_iter();
    let Some(mut first) = iter.next() else {
        return Ok(Content::default());
    };
    first.also = iter.filter_map(|c| c.kind).collect();
    match first.kind {
        Some("vfat") => vfat_root_label(src, &head, &mut first)?,
        Some("ntfs") => ntfs_label(src, &head, &mut first)?,
        _ => {}
    }
    Ok(first)
}

fn content(kind: &'static str, usage: &'static str) -> Content {
    Content {
        kind: Some(kind),
        usage: Some(usage),
        ..Content::default()
    }
}

fn label(raw: Option<Vec<u8>>) -> Option<Text> {
    raw.filter(|l| !l.is_empty()).map(Text::from)
}

/// ext2/3/4 (and an external journal, `jbd`): libblkid's rules on the
/// feature bits.
fn ext(b: &[u8]) -> Option<Content> {
    let sb = slice(b, 1024, 1024)?;
    if le16(sb, 0x38)? != 0xef53 {
        return None;
    }
    let (compat, incompat, ro) = (le32(sb, 0x5c)?, le32(sb, 0x60)?, le32(sb, 0x64)?);
    const JOURNAL_DEV: u64 = 0x8;
    const HAS_JOURNAL: u64 = 0x4;
    // What ext2 and ext3 understand.
    const EXT2_INCOMPAT: u64 = 0x2 | 0x10;
    const EXT3_INCOMPAT: u64 = 0x2 | 0x4 | 0x10;
    const EXT2_RO: u64 = 0x1 | 0x2 | 0x4;
    let kind = if incompat & JOURNAL_DEV != 0 {
        "jbd"
    } else if compat & HAS_JOURNAL == 0 && incompat & !EXT2_INCOMPAT == 0 && ro & !EXT2_RO == 0 {
        "ext2"
    } else if compat & HAS_JOURNAL != 0 && incompat & !EXT3_INCOMPAT == 0 && ro & !EXT2_RO == 0 {
        "ext3"
    } else {
        "ext4"
    };
    let mut c = content(kind, if kind == "jbd" { "other" } else { "filesystem" });
    c.version = Some(format!("{}.{}", le32(sb, 0x4c)?, le16(sb, 0x3e)?));
    c.uuid = uuid(sb, 0x68);
    c.label = label(text(sb, 0x78, 16));
    let log = le32(sb, 0x18)?;
    let blocks = if incompat & 0x80 != 0 {
        le32(sb, 0x4)? | (le32(sb, 0x150)? << 32)
    } else {
        le32(sb, 0x4)?
    };
    c.size = (log < 32)
        .then(|| 1024u64.checked_shl(u32::try_from(log).ok()?))
        .flatten()
        .and_then(|bs| blocks.checked_mul(bs));
    Some(c)
}

fn xfs(b: &[u8]) -> Option<Content> {
    if b.get(0..4)? != b"XFSB" {
        return None;
    }
    let mut c = content("xfs", "filesystem");
    c.uuid = uuid(b, 32);
    c.label = label(text(b, 108, 12));
    c.size = be64(b, 8)?.checked_mul(be32(b, 4)?);
    Some(c)
}

fn btrfs(b: &[u8]) -> Option<Content> {
    let sb = slice(b, 0x10000, 0x1000)?;
    if sb.get(0x40..0x48)? != b"_BHRfS_M" {
        return None;
    }
    let mut c = content("btrfs", "filesystem");
    c.uuid = uuid(sb, 0x20);
    c.label = label(text(sb, 0x12b, 256));
    c.size = le64(sb, 0x70);
    Some(c)
}

fn luks(b: &[u8]) -> Option<Content> {
    if b.get(0..6)? != b"LUKS\xba\xbe" {
        return None;
    }
    let version = u8_at(b, 7)?;
    let mut c = content("crypto_LUKS", "crypto");
    c.version = Some(version.to_string());
    c.uuid = text(b, 168, 40).map(|u| String::from_utf8_lossy(&u).into_owned());
    if version == 2 {
        c.label = label(text(b, 24, 48));
    }
    Some(c)
}

/// An LVM physical volume: the label in one of the first four sectors.
fn lvm2(b: &[u8]) -> Option<Content> {
    for s in 0..4usize {
        let at = s.checked_mul(512)?;
        let l = slice(b, at, 512)?;
        if l.get(0..8)? != b"LABELONE" || l.get(24..32)? != b"LVM2 001" {
            continue;
        }
        let pv = us(le32(l, 20)?)?;
        let id = slice(l, pv, 32)?;
        let mut c = content("LVM2_member", "raid");
        c.version = Some("LVM2 001".into());
        c.uuid = Some(super::lvm::label::format_uuid(id));
        c.size = le64(l, pv.checked_add(32)?);
        return Some(c);
    }
    None
}

fn swap(b: &[u8]) -> Option<Content> {
    for page in [4096usize, 8192, 16384, 32768, 65536] {
        let Some(sig) = slice(b, page.checked_sub(10)?, 10) else {
            continue;
        };
        let (kind, version) = match sig {
            b"SWAPSPACE2" => ("swap", "1"),
            b"SWAP-SPACE" => ("swap", "0"),
            s if s.starts_with(b"S1SUSPEND") => ("swsuspend", "1"),
            _ => continue,
        };
        let mut c = content(kind, "other");
        c.version = Some(version.into());
        if version == "1" {
            c.uuid = uuid(b, 1036).filter(|u| u != "00000000-0000-0000-0000-000000000000");
            c.label = label(text(b, 1052, 16));
            let last = le32(b, 1028)?;
            c.size = last
                .checked_add(1)
                .and_then(|n| n.checked_mul(u64::try_from(page).ok()?));
        }
        return Some(c);
    }
    None
}

/// The NTFS boot sector (the label lives in the MFT: [`ntfs_label`]).
fn ntfs_boot(b: &[u8]) -> Option<Content> {
    if b.get(3..11)? != b"NTFS    " {
        return None;
    }
    let mut c = content("ntfs", "filesystem");
    c.uuid = Some(format!("{:016X}", le64(b, 0x48)?));
    c.size = le64(b, 0x28)?.checked_mul(le16(b, 0x0b)?);
    Some(c)
}

/// The geometry of a FAT boot sector.
struct Fat {
    bps: u64,
    spc: u64,
    reserved: u64,
    fats: u64,
    fat_len: u64,
    root_entries: u64,
    total: u64,
    fat32: bool,
}

fn fat_geometry(b: &[u8]) -> Option<Fat> {
    if !matches!(b.first()?, 0xeb | 0xe9) {
        return None;
    }
    let bps = le16(b, 0x0b)?;
    let spc = u8_at(b, 0x0d)?;
    let fats = u8_at(b, 0x10)?;
    let media = u8_at(b, 0x15)?;
    if !matches!(bps, 512 | 1024 | 2048 | 4096)
        || !spc.is_power_of_two()
        || fats == 0
        || fats > 4
        || (media < 0xf8 && media != 0xf0)
    {
        return None;
    }
    let fat16_len = le16(b, 0x16)?;
    let fat32 = fat16_len == 0;
    let total = match le16(b, 0x13)? {
        0 => le32(b, 0x20)?,
        n => n,
    };
    Some(Fat {
        bps,
        spc,
        reserved: le16(b, 0x0e)?.max(1),
        fats,
        fat_len: if fat32 { le32(b, 0x24)? } else { fat16_len },
        root_entries: le16(b, 0x11)?,
        total,
        fat32,
    })
}

impl Fat {
    fn root_dir_sectors(&self) -> u64 {
        self.root_entries
            .saturating_mul(32)
            .div_ceil(self.bps.max(1))
    }

    fn data_start(&self) -> u64 {
        self.reserved
            .saturating_add(self.fats.saturating_mul(self.fat_len))
            .saturating_add(self.root_dir_sectors())
    }

    fn clusters(&self) -> u64 {
        self.total
            .saturating_sub(self.data_start())
            .checked_div(self.spc)
            .unwrap_or(0)
    }
}

fn vfat(b: &[u8]) -> Option<Content> {
    if matches!(b.get(3..11)?, b"NTFS    " | b"EXFAT   ") {
        return None;
    }
    let g = fat_geometry(b)?;
    let version = if g.fat32 {
        "FAT32"
    } else if g.clusters() < 4085 {
        "FAT12"
    } else {
        "FAT16"
    };
    let (serial_at, label_at) = if g.fat32 { (0x43, 0x47) } else { (0x27, 0x2b) };
    let s = slice(b, serial_at, 4)?;
    let mut c = content("vfat", "filesystem");
    c.version = Some(version.into());
    c.uuid = Some(format!(
        "{:02X}{:02X}-{:02X}{:02X}",
        s.get(3)?,
        s.get(2)?,
        s.get(1)?,
        s.first()?
    ));
    c.label = fat_label(slice(b, label_at, 11)?);
    c.size = g.total.checked_mul(g.bps);
    Some(c)
}

/// A FAT label: 11 bytes, space-padded; `NO NAME` is none.
fn fat_label(raw: &[u8]) -> Option<Text> {
    let end = raw
        .iter()
        .rposition(|&c| c != b' ' && c != 0)?
        .checked_add(1)?;
    let l = raw.get(..end)?;
    (l != b"NO NAME").then(|| Text::from(l.to_vec()))
}

/// How many root directory clusters of FAT32 are read for the label.
const MAX_ROOT_CLUSTERS: u64 = 64;

/// blkid takes a FAT label from the root directory's volume-label entry
/// when there is one (the boot sector's copy is often stale).
fn vfat_root_label(src: &dyn BlockSource, b: &[u8], c: &mut Content) -> Result<(), BlockError> {
    let Some(g) = fat_geometry(b) else {
        return Ok(());
    };
    let Some(cluster_bytes) = g.spc.checked_mul(g.bps) else {
        return Ok(());
    };
    // Byte ranges of the root directory.
    let mut ranges = Vec::new();
    if g.fat32 {
        let fat_at = g.reserved.saturating_mul(g.bps);
        let mut cluster = le32(b, 0x2c).unwrap_or(0) & 0x0fff_ffff;
        for _ in 0..MAX_ROOT_CLUSTERS {
            if cluster < 2 || cluster >= g.clusters().saturating_add(2) {
                break;
            }
            let at = g
                .data_start()
                .saturating_add(cluster.saturating_sub(2).saturating_mul(g.spc))
                .saturating_mul(g.bps);
            ranges.push((at, cluster_bytes));
            let mut next = [0u8; 4];
            let entry = fat_at.saturating_add(cluster.saturating_mul(4));
            if entry.saturating_add(4) > src.len() {
                break;
            }
            src.read_at(entry, &mut next)?;
            cluster = u64::from(u32::from_le_bytes(next)) & 0x0fff_ffff;
        }
    } else {
        let at = g
            .reserved
            .saturating_add(g.fats.saturating_mul(g.fat_len))
            .saturating_mul(g.bps);
        ranges.push((at, g.root_entries.saturating_mul(32)));
    }
    for (at, len) in ranges {
        if at.saturating_add(len) > src.len() || len > (1 << 20) {
            return Ok(());
        }
        let mut dir = vec![0u8; us(len).unwrap_or(0)];
        src.read_at(at, &mut dir)?;
        for e in dir.chunks_exact(32) {
            match e.first() {
                Some(0) => return Ok(()),
                Some(0xe5) => continue,
                _ => {}
            }
            let attr = e.get(11).copied().unwrap_or(0);
            if attr != 0x0f && attr & 0x18 == 0x08 {
                if let Some(l) = e.get(0..11).and_then(fat_label) {
                    c.label = Some(l);
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The NTFS label: the `$VOLUME_NAME` attribute of MFT record 3.
fn ntfs_label(src: &dyn BlockSource, b: &[u8], c: &mut Content) -> Result<(), BlockError> {
    let bps = le16(b, 0x0b).unwrap_or(512);
    let spc = match u8_at(b, 0x0d).unwrap_or(1) {
        n @ 0..=0x80 => n,
        n => 1u64
            .checked_shl(u32::try_from(256u64.saturating_sub(n)).unwrap_or(64))
            .unwrap_or(0),
    };
    let cluster = bps.saturating_mul(spc);
    let record = match b.get(0x40).map(|&x| i8::from_le_bytes([x])) {
        Some(n) if n < 0 => 1u64.checked_shl(u32::from(n.unsigned_abs())).unwrap_or(0),
        Some(n) => u64::from(n.unsigned_abs()).saturating_mul(cluster),
        None => 0,
    };
    if !(512..=65536).contains(&record) || bps == 0 {
        return Ok(());
    }
    let at = le64(b, 0x30)
        .unwrap_or(0)
        .saturating_mul(cluster)
        .saturating_add(record.saturating_mul(3));
    if at.saturating_add(record) > src.len() {
        return Ok(());
    }
    let mut r = vec![0u8; us(record).unwrap_or(0)];
    src.read_at(at, &mut r)?;
    if r.get(0..4) != Some(b"FILE".as_slice()) {
        return Ok(());
    }
    // Update sequence: the last two bytes of each sector were replaced
    // with the sequence number; put the saved bytes back.
    let usa = us(le16(&r, 4).unwrap_or(0)).unwrap_or(0);
    let count = us(le16(&r, 6).unwrap_or(0)).unwrap_or(0);
    let sector = us(bps).unwrap_or(512);
    for i in 1..count {
        let (Some(src_at), Some(dst)) = (
            usa.checked_add(i.saturating_mul(2)),
            i.checked_mul(sector).and_then(|e| e.checked_sub(2)),
        ) else {
            break;
        };
        let Some(saved) = slice(&r, src_at, 2).map(<[u8]>::to_vec) else {
            break;
        };
        if let Some(d) = r.get_mut(dst..dst.saturating_add(2)) {
            d.copy_from_slice(&saved);
        }
    }
    let mut pos = us(le16(&r, 0x14).unwrap_or(0)).unwrap_or(0);
    for _ in 0..64 {
        let (Some(kind), Some(len)) = (le32(&r, pos), le32(&r, pos.saturating_add(4))) else {
            return Ok(());
        };
        if kind == 0xffff_ffff || len == 0 {
            return Ok(());
        }
        if kind == 0x60 && u8_at(&r, pos.saturating_add(8)) == Some(0) {
            let vlen = us(le32(&r, pos.saturating_add(0x10)).unwrap_or(0)).unwrap_or(0);
            let voff = us(le16(&r, pos.saturating_add(0x14)).unwrap_or(0)).unwrap_or(0);
            if let Some(v) = slice(&r, pos.saturating_add(voff), vlen) {
                let units: Vec<u16> = v
                    .chunks_exact(2)
                    .map(|p| {
                        u16::from_le_bytes([
                            p.first().copied().unwrap_or(0),
                            p.get(1).copied().unwrap_or(0),
                        ])
                    })
                    .collect();
                c.label = label(Some(String::from_utf16_lossy(&units).into_bytes()));
            }
            return Ok(());
        }
        pos = pos.saturating_add(us(len).unwrap_or(usize::MAX));
    }
    Ok(())
}

/// ZFS: a vdev label at the start holds an uberblock ring from 128 KiB;
/// an uberblock starts with the magic 0x00bab10c (in either byte order).
/// The pool's name and GUID live in an XDR nvlist that is not decoded:
/// the member is named, its label and UUID are not given.
fn zfs(src: &dyn BlockSource) -> Result<Option<Content>, BlockError> {
    const RING: u64 = 128 << 10;
    const MAGIC: u64 = 0x00ba_b10c;
    if src.len() < 4 * RING {
        return Ok(None);
    }
    let mut ring = vec![0u8; us(RING).unwrap_or(0)];
    src.read_at(RING, &mut ring)?;
    let found = ring
        .chunks_exact(1024)
        .any(|ub| le64(ub, 0) == Some(MAGIC) || be64(ub, 0) == Some(MAGIC));
    Ok(found.then(|| content("zfs_member", "filesystem")))
}
