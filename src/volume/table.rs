//! The model of a partition table, whichever kind: its partitions, what
//! was checked (GPT CRCs, which header was used), and the problems found,
//! each naming the table and entry.
use serde::Serialize;

use super::gpt_types::Role;
use super::Text;

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based, as Linux numbers them (logical MBR partitions from 5).
    pub number: u32,
    /// Byte offset and length on the disk.
    pub start: u64,
    pub len: u64,
    /// First sector and sector count, in the table's sector size (what
    /// sfdisk prints).
    pub first_sector: u64,
    pub sectors: u64,
    /// The MBR type byte in hex (`83`, as sfdisk prints it), or the GPT
    /// type GUID.
    pub kind: String,
    /// fdisk's name for the type, when known.
    pub type_name: Option<&'static str>,
    /// GPT partition name (raw; escaped when shown).
    pub name: Text,
    /// GPT unique partition GUID.
    pub uuid: Option<String>,
    /// MBR active flag.
    pub bootable: bool,
    /// GPT attribute bits.
    pub attributes: u64,
    /// An MBR logical partition (inside the extended one).
    pub logical: bool,
    #[serde(skip)]
    pub role: Role,
    /// Where the entry describing it lies on the disk.
    pub entry_offset: u64,
}

/// A CRC32 as stored and as computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Crc {
    pub stored: u32,
    pub computed: u32,
}

impl Crc {
    pub fn ok(&self) -> bool {
        self.stored == self.computed
    }
}

/// One GPT header as read and checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GptHeader {
    /// Where it was read (primary: 1; backup: normally the last LBA).
    pub lba: u64,
    /// Why it cannot be used (`None`: it can).
    #[serde(serialize_with = "super::escaped_opt")]
    pub error: Option<String>,
    pub header_crc: Option<Crc>,
    pub entries_crc: Option<Crc>,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: String,
    pub entries_lba: u64,
    pub entry_count: u64,
    pub entry_size: u64,
}

/// What the GPT headers said, and which one was used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GptState {
    pub primary: GptHeader,
    pub backup: Option<GptHeader>,
    /// `primary`, `backup`, or `none` when neither can be trusted.
    pub used: &'static str,
}

/// A problem in a table, naming the structure and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `GPT header at LBA 1`, `MBR entry 2`, `LVM metadata of vg0`, …
    #[serde(serialize_with = "super::escaped")]
    pub structure: String,
    /// Byte offset on the disk, when there is one.
    pub offset: Option<u64>,
    #[serde(serialize_with = "super::escaped")]
    pub detail: String,
}

impl Problem {
    pub fn new(
        structure: impl Into<String>,
        offset: Option<u64>,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            structure: structure.into(),
            offset,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} (at {o:#x}): {}", self.structure, self.detail),
            None => write!(f, "{}: {}", self.structure, self.detail),
        }
    }
}

/// A partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    /// `dos` or `gpt`, as sfdisk says.
    pub label: &'static str,
    /// Bytes per sector the table counts in.
    pub sector_size: u64,
    /// The MBR disk signature (`0x…`) or the GPT disk GUID.
    pub id: String,
    pub partitions: Vec<Partition>,
    /// GPT only: the headers and their CRCs.
    pub gpt: Option<GptState>,
    /// Entries that could not be used, overlaps, damaged headers.
    pub problems: Vec<Problem>,
}

impl Table {
    /// Flags partitions that overlap one another (an extended partition
    /// and its logical partitions excepted): sorted by start, each is
    /// compared with the one reaching furthest before it.
    pub fn check_overlaps(&mut self) {
        let mut order: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.role != Role::Extended)
            .collect();
        order.sort_by_key(|p| (p.start, p.number));
        let mut furthest: Option<&Partition> = None;
        let mut found = Vec::new();
        for p in order {
            if let Some(f) = furthest {
                let f_end = f.start.saturating_add(f.len);
                if p.start < f_end {
                    found.push(Problem::new(
                        format!("{} partition {}", self.label, p.number),
                        Some(p.entry_offset),
                        format!(
                            "overlaps partition {} (bytes {:#x}..{:#x} and {:#x}..{:#x})",
                            f.number,
                            f.start,
                            f_end,
                            p.start,
                            p.start.saturating_add(p.len)
                        ),
                    ));
                }
                if p.start.saturating_add(p.len) > f_end {
                    furthest = Some(p);
                }
            } else {
                furthest = Some(p);
            }
        }
        self.problems.extend(found);
    }
}
