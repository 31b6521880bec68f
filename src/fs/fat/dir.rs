//! FAT directory entries: 32-byte short (8.3) entries, preceded by VFAT
//! long-name entries that carry the name in UTF-16 pieces, each with the
//! checksum of the short name it belongs to. A long name whose sequence
//! or checksum is broken is dropped and the short name used, as Windows
//! and Linux do, and the damage is reported.
use crate::layout::{Endian, Field, Kind};

macro_rules! fields {
    ($($id:ident = $name:literal, $off:literal, $size:literal, $kind:ident, $doc:literal;)*) => {
        $(pub const $id: Field = Field::of(Kind::$kind, $name, $off, $size, $doc);)*
    };
}

fields! {
    DIR_NAME = "DIR_Name", 0x0, 11, Text, "short name: 8 bytes of name, 3 of extension, space padded";
    DIR_ATTR = "DIR_Attr", 0xb, 1, Uint, "0x01 read-only, 0x02 hidden, 0x04 system, 0x08 volume label, 0x10 directory, 0x20 archive";
    DIR_NTRES = "DIR_NTRes", 0xc, 1, Uint, "0x08: name in lower case, 0x10: extension in lower case";
    DIR_CRT_TIME_TENTH = "DIR_CrtTimeTenth", 0xd, 1, Uint, "creation time, 10 ms units (0-199)";
    DIR_CRT_TIME = "DIR_CrtTime", 0xe, 2, Uint, "creation time (hours, minutes, 2-second units)";
    DIR_CRT_DATE = "DIR_CrtDate", 0x10, 2, Uint, "creation date (years from 1980, month, day)";
    DIR_LST_ACC_DATE = "DIR_LstAccDate", 0x12, 2, Uint, "last access date";
    DIR_FST_CLUS_HI = "DIR_FstClusHI", 0x14, 2, Uint, "first cluster, high 16 bits (FAT32)";
    DIR_WRT_TIME = "DIR_WrtTime", 0x16, 2, Uint, "last write time";
    DIR_WRT_DATE = "DIR_WrtDate", 0x18, 2, Uint, "last write date";
    DIR_FST_CLUS_LO = "DIR_FstClusLO", 0x1a, 2, Uint, "first cluster, low 16 bits";
    DIR_FILE_SIZE = "DIR_FileSize", 0x1c, 4, Uint, "size in bytes (0 for directories)";
}

fields! {
    LDIR_ORD = "LDIR_Ord", 0x0, 1, Uint, "sequence number; 0x40 marks the last piece";
    LDIR_NAME1 = "LDIR_Name1", 0x1, 10, Bytes, "characters 1-5 (UTF-16)";
    LDIR_ATTR = "LDIR_Attr", 0xb, 1, Uint, "0x0F";
    LDIR_TYPE = "LDIR_Type", 0xc, 1, Uint, "0";
    LDIR_CHKSUM = "LDIR_Chksum", 0xd, 1, Uint, "checksum of the short name";
    LDIR_NAME2 = "LDIR_Name2", 0xe, 12, Bytes, "characters 6-11";
    LDIR_FST_CLUS_LO = "LDIR_FstClusLO", 0x1a, 2, Uint, "0";
    LDIR_NAME3 = "LDIR_Name3", 0x1c, 4, Bytes, "characters 12-13";
}

/// A short entry's fields.
pub const ENTRY: &[Field] = &[
    DIR_NAME,
    DIR_ATTR,
    DIR_NTRES,
    DIR_CRT_TIME_TENTH,
    DIR_CRT_TIME,
    DIR_CRT_DATE,
    DIR_LST_ACC_DATE,
    DIR_FST_CLUS_HI,
    DIR_WRT_TIME,
    DIR_WRT_DATE,
    DIR_FST_CLUS_LO,
    DIR_FILE_SIZE,
];

/// A long-name entry's fields.
pub const LONG_ENTRY: &[Field] = &[
    LDIR_ORD,
    LDIR_NAME1,
    LDIR_ATTR,
    LDIR_TYPE,
    LDIR_CHKSUM,
    LDIR_NAME2,
    LDIR_FST_CLUS_LO,
    LDIR_NAME3,
];

pub const ATTR_READ_ONLY: u8 = 0x01;
pub const ATTR_HIDDEN: u8 = 0x02;
pub const ATTR_SYSTEM: u8 = 0x04;
pub const ATTR_VOLUME_ID: u8 = 0x08;
pub const ATTR_DIRECTORY: u8 = 0x10;
pub const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0f;

/// A short (8.3) entry, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShortEntry {
    /// `DIR_Name` as stored.
    pub raw_name: [u8; 11],
    pub attr: u8,
    pub nt_res: u8,
    pub first_cluster: u32,
    pub size: u32,
    pub crt_tenth: u8,
    pub crt_time: u16,
    pub crt_date: u16,
    pub acc_date: u16,
    pub wrt_time: u16,
    pub wrt_date: u16,
}

fn get(f: Field, b: &[u8]) -> u64 {
    f.read(b, Endian::Little).unwrap_or(0)
}

fn small<T: TryFrom<u64> + Default>(v: u64) -> T {
    T::try_from(v).unwrap_or_default()
}

impl ShortEntry {
    /// Decodes a 32-byte entry (shorter input reads as zeros).
    pub fn decode(b: &[u8]) -> ShortEntry {
        let mut raw_name = [b' '; 11];
        if let Some(n) = b.get(..11) {
            raw_name.copy_from_slice(n);
        }
        let hi = if get(DIR_FST_CLUS_HI, b) != 0 {
            get(DIR_FST_CLUS_HI, b) << 16
        } else {
            0
        };
        ShortEntry {
            raw_name,
            attr: small(get(DIR_ATTR, b)),
            nt_res: small(get(DIR_NTRES, b)),
            first_cluster: small(hi | get(DIR_FST_CLUS_LO, b)),
            size: small(get(DIR_FILE_SIZE, b)),
            crt_tenth: small(get(DIR_CRT_TIME_TENTH, b)),
            crt_time: small(get(DIR_CRT_TIME, b)),
            crt_date: small(get(DIR_CRT_DATE, b)),
            acc_date: small(get(DIR_LST_ACC_DATE, b)),
            wrt_time: small(get(DIR_WRT_TIME, b)),
            wrt_date: small(get(DIR_WRT_DATE, b)),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    /// The name as a person reads it: `NAME.EXT` with trailing spaces cut,
    /// lower-cased where `DIR_NTRes` says so, a leading 0x05 read as 0xE5,
    /// bytes past ASCII read in code page 437 (Linux's default).
    pub fn display_name(&self) -> String {
        let mut base: Vec<u8> = self.raw_name.get(..8).unwrap_or(&[]).to_vec();
        if base.first() == Some(&0x05) {
            if let Some(b) = base.first_mut() {
                *b = 0xe5;
            }
        }
        let ext = self.raw_name.get(8..).unwrap_or(&[]);
        let trim = |s: &[u8]| -> Vec<u8> {
            let end = s
                .iter()
                .rposition(|&c| c != b' ')
                .map_or(0, |p| p.saturating_add(1));
            s.get(..end).unwrap_or(&[]).to_vec()
        };
        let text = |s: &[u8], lower: bool| -> String {
            s.iter()
                .map(|&c| {
                    let ch = cp437(c);
                    if lower {
                        ch.to_ascii_lowercase()
                    } else {
                        ch
                    }
                })
                .collect()
        };
        let mut name = text(&trim(&base), self.nt_res & 0x08 != 0);
        let ext = trim(ext);
        if !ext.is_empty() {
            name.push('.');
            name.push_str(&text(&ext, self.nt_res & 0x10 != 0));
        }
        name
    }
}

/// The checksum of a short name that its long-name entries carry.
pub fn short_name_checksum(name: &[u8; 11]) -> u8 {
    name.iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// Code page 437, bytes 0x80 to 0xFF.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// [`CP437_HIGH`] as a table, built once: a lookup per byte instead of
/// walking the string (what made every short name cost ~100 steps per
/// byte, the slowest part of a FAT directory walk).
static CP437_TABLE: std::sync::LazyLock<Vec<char>> =
    std::sync::LazyLock::new(|| CP437_HIGH.chars().collect());

fn cp437(b: u8) -> char {
    if b < 0x80 {
        return char::from(b);
    }
    CP437_TABLE
        .get(usize::from(b.saturating_sub(0x80)))
        .copied()
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// A directory slot, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `0x00`: no entries follow.
    End,
    /// `0xE5`: a deleted entry.
    Deleted,
    /// A long-name piece: ordinal (with the 0x40 flag), checksum, and its
    /// 13 UTF-16 units.
    Long {
        ord: u8,
        checksum: u8,
        units: [u16; 13],
    },
    /// The volume label.
    Label([u8; 11]),
    /// A file or directory.
    Short(ShortEntry),
}

/// Classifies one 32-byte slot.
pub fn slot(b: &[u8]) -> Slot {
    let first = b.first().copied().unwrap_or(0);
    if first == 0 {
        return Slot::End;
    }
    if first == 0xe5 {
        return Slot::Deleted;
    }
    let attr = u8::try_from(get(DIR_ATTR, b)).unwrap_or(0);
    if attr & 0x3f == ATTR_LONG_NAME {
        let mut units = [0u16; 13];
        let pieces = [(0x1usize, 5usize), (0xe, 6), (0x1c, 2)];
        let mut k = 0usize;
        for (at, n) in pieces {
            for i in 0..n {
                let o = at.saturating_add(i.saturating_mul(2));
                let u = b
                    .get(o..o.saturating_add(2))
                    .and_then(|p| crate::bytes::le16(p, 0))
                    .unwrap_or(0);
                if let Some(slot) = units.get_mut(k) {
                    *slot = u;
                }
                k = k.saturating_add(1);
            }
        }
        return Slot::Long {
            ord: first,
            checksum: u8::try_from(get(LDIR_CHKSUM, b)).unwrap_or(0),
            units,
        };
    }
    let e = ShortEntry::decode(b);
    if attr & ATTR_VOLUME_ID != 0 && attr & ATTR_DIRECTORY == 0 {
        return Slot::Label(e.raw_name);
    }
    Slot::Short(e)
}

/// A file or directory found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The long name (UTF-8) or the short name.
    pub name: String,
    /// The short name as a person reads it (`LONGFI~1.TXT`).
    pub short_name: String,
    pub entry: ShortEntry,
    /// The short entry's offset on the volume.
    pub offset: u64,
    /// Offset of the first long-name piece, when the name came from one.
    pub long_offset: Option<u64>,
}

/// Builds items from a stream of slots: feed each slot with its volume
/// offset, take the item it completes.
#[derive(Default)]
pub struct Assembler {
    /// Pieces seen so far: (ordinal without flag, checksum, units).
    pieces: Vec<(u8, u8, [u16; 13])>,
    expect: u8,
    start: Option<u64>,
    /// Damage found (already worded).
    pub problems: Vec<String>,
    /// The volume label, when the directory holds one.
    pub label: Option<[u8; 11]>,
}

impl Assembler {
    fn drop_pieces(&mut self, at: u64, why: &str) {
        if let Some(start) = self.start.take() {
            self.problems.push(format!(
                "long name at {start:#x} dropped before the entry at {at:#x}: {why}"
            ));
        }
        self.pieces.clear();
        self.expect = 0;
    }

    /// Feeds the slot at `offset`. Returns the item it completes, if any.
    pub fn feed(&mut self, s: Slot, offset: u64) -> Option<Item> {
        match s {
            Slot::End | Slot::Deleted => {
                self.drop_pieces(offset, "an unused entry follows it");
                None
            }
            Slot::Label(l) => {
                self.drop_pieces(offset, "a volume label follows it");
                self.label.get_or_insert(l);
                None
            }
            Slot::Long {
                ord,
                checksum,
                units,
            } => {
                let n = ord & 0x3f;
                if ord & 0x40 != 0 {
                    if !self.pieces.is_empty() {
                        self.drop_pieces(offset, "a new long name starts before it ended");
                    }
                    if n == 0 || n > 20 {
                        self.problems.push(format!(
                            "long-name entry at {offset:#x}: sequence number {n} (1 to 20)"
                        ));
                        return None;
                    }
                    self.start = Some(offset);
                    self.expect = n;
                } else if self.pieces.is_empty() || n != self.expect {
                    self.drop_pieces(offset, "its sequence is broken");
                    self.problems.push(format!(
                        "long-name entry at {offset:#x}: sequence number {n} out of order"
                    ));
                    return None;
                } else if self.pieces.last().map(|p| p.1) != Some(checksum) {
                    self.drop_pieces(offset, "its pieces carry different checksums");
                    return None;
                }
                self.pieces.push((n, checksum, units));
                self.expect = n.saturating_sub(1);
                None
            }
            Slot::Short(entry) => {
                let short_name = entry.display_name();
                let mut name = short_name.clone();
                let mut long_offset = None;
                if !self.pieces.is_empty() {
                    let sum = short_name_checksum(&entry.raw_name);
                    if self.expect != 0 {
                        self.drop_pieces(offset, "pieces are missing");
                    } else if self.pieces.iter().any(|p| p.1 != sum) {
                        self.drop_pieces(offset, "its checksum does not match the short name's");
                    } else {
                        let units: Vec<u16> = self
                            .pieces
                            .iter()
                            .rev()
                            .flat_map(|p| p.2)
                            .take_while(|&u| u != 0)
                            .collect();
                        let decoded: String = char::decode_utf16(units.iter().copied())
                            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                            .collect();
                        if decoded.contains(char::REPLACEMENT_CHARACTER) {
                            self.problems.push(format!(
                                "long name of the entry at {offset:#x}: unpaired UTF-16 surrogate"
                            ));
                        }
                        name = decoded;
                        long_offset = self.start.take();
                        self.pieces.clear();
                    }
                }
                Some(Item {
                    name,
                    short_name,
                    entry,
                    offset,
                    long_offset,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_name_checksum_is_the_specs() {
        // From the Microsoft FAT specification's algorithm, computed by
        // hand for "LONGFI~1TXT".
        let mut sum = 0u8;
        for &c in b"LONGFI~1TXT" {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(c);
        }
        assert_eq!(short_name_checksum(b"LONGFI~1TXT"), sum);
    }

    #[test]
    fn short_names_follow_case_bits_and_escape() {
        let mut b = [0u8; 32];
        b[..11].copy_from_slice(b"README  TXT");
        b[0xc] = 0x18;
        assert_eq!(ShortEntry::decode(&b).display_name(), "readme.txt");
        b[..11].copy_from_slice(b"\x05BC     \x80  ");
        b[0xc] = 0;
        // 0x05 stands for 0xE5, which code page 437 reads as σ.
        assert_eq!(ShortEntry::decode(&b).display_name(), "σBC.Ç");
    }
}
