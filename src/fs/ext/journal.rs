//! The jbd2 journal superblock: the first block of the journal inode,
//! big-endian (unlike the rest of ext4). Decoded for `info`, as dumpe2fs's
//! journal lines.
use crate::layout::{decode_table, Endian, Field, Kind};

/// `h_magic`.
pub const MAGIC: u32 = 0xc03b_3998;

/// Every field of the journal superblock (v2 layout).
pub const JOURNAL_SB: &[Field] = &[
    Field::new("h_magic", 0x0, 4, "0xC03B3998"),
    Field::new("h_blocktype", 0x4, 4, "3: superblock v1, 4: v2"),
    Field::new("h_sequence", 0x8, 4, "header sequence"),
    Field::new("s_blocksize", 0xc, 4, "journal block size"),
    Field::new("s_maxlen", 0x10, 4, "journal blocks"),
    Field::new("s_first", 0x14, 4, "first block of log information"),
    Field::new("s_sequence", 0x18, 4, "first commit ID expected in the log"),
    Field::new(
        "s_start",
        0x1c,
        4,
        "block of the start of the log (0: clean)",
    ),
    Field::new("s_errno", 0x20, 4, "error value (signed)"),
    Field::new("s_feature_compat", 0x24, 4, "compatible features"),
    Field::new("s_feature_incompat", 0x28, 4, "incompatible features"),
    Field::new(
        "s_feature_ro_compat",
        0x2c,
        4,
        "read-only compatible features",
    ),
    Field::of(Kind::Uuid, "s_uuid", 0x30, 16, "journal UUID"),
    Field::new("s_nr_users", 0x40, 4, "filesystems sharing the journal"),
    Field::new("s_dynsuper", 0x44, 4, "dynamic superblock copy"),
    Field::new(
        "s_max_transaction",
        0x48,
        4,
        "limit of journal blocks per transaction",
    ),
    Field::new(
        "s_max_trans_data",
        0x4c,
        4,
        "limit of data blocks per transaction",
    ),
    Field::new(
        "s_checksum_type",
        0x50,
        1,
        "1 crc32, 2 md5, 3 sha1, 4 crc32c",
    ),
    Field::new("s_num_fc_blks", 0x54, 4, "fast commit blocks"),
    Field::new("s_checksum", 0xfc, 4, "checksum of the superblock"),
    Field::of(
        Kind::Uuid,
        "s_users_0",
        0x100,
        16,
        "first user's filesystem UUID",
    ),
];

bitflags::bitflags! {
    /// The journal's `s_feature_compat` (names: e2fsprogs', lower case).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct JournalCompat: u32 {
        const JOURNAL_CHECKSUM = 1;
    }
}

bitflags::bitflags! {
    /// The journal's `s_feature_incompat` (e2fsprogs 1.47 has no name for
    /// fast commit, 0x20: it prints `FEATURE_I5`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct JournalIncompat: u32 {
        const JOURNAL_INCOMPAT_REVOKE = 1;
        const JOURNAL_64BIT = 2;
        const JOURNAL_ASYNC_COMMIT = 4;
        const JOURNAL_CHECKSUM_V2 = 8;
        const JOURNAL_CHECKSUM_V3 = 0x10;
    }
}

/// A field of [`JOURNAL_SB`], found when compiling.
macro_rules! jsb {
    ($name:literal) => {
        $crate::layout::field!($crate::fs::ext::journal::JOURNAL_SB, $name)
    };
}

/// The names of the set bits of a feature word, unknown ones as
/// `FEATURE_<letter><bit>`.
fn names_of<F: bitflags::Flags<Bits = u32>>(value: u32, letter: char) -> Vec<String> {
    (0..32)
        .map(|bit| 1u32 << bit)
        .filter(|m| value & m != 0)
        .map(|m| {
            F::FLAGS.iter().find(|f| f.value().bits() == m).map_or_else(
                || format!("FEATURE_{letter}{}", m.trailing_zeros()),
                |f| f.name().to_ascii_lowercase(),
            )
        })
        .collect()
}
/// Most users a shared journal lists (`JBD2_USERS_MAX`).
const USERS_MAX: usize = 48;

/// A decoded journal superblock.
#[derive(Clone, Debug)]
pub struct JournalSb {
    /// The on-disk bytes and their offset on the volume.
    raw: Vec<u8>,
    base: u64,
    /// `s_users`: the UUIDs of the filesystems sharing the journal (as
    /// many as `s_nr_users` says, at most 48).
    pub users: Vec<[u8; 16]>,
}

impl JournalSb {
    /// Decodes the first journal block; `None` without the magic.
    pub fn decode(bytes: &[u8], base: u64) -> Option<JournalSb> {
        if jsb!("h_magic").read(bytes, Endian::Big) != Some(u64::from(MAGIC)) {
            return None;
        }
        let nr = jsb!("s_nr_users").read(bytes, Endian::Big).unwrap_or(0);
        let users = (0..usize::try_from(nr).unwrap_or(USERS_MAX).min(USERS_MAX))
            .map_while(|i| {
                let at = i.checked_mul(16)?.checked_add(0x100)?;
                let mut u = [0u8; 16];
                u.copy_from_slice(bytes.get(at..at.saturating_add(16))?);
                Some(u)
            })
            .collect();
        let len = bytes.len().min(0x400);
        Some(JournalSb {
            raw: bytes.get(..len).unwrap_or(bytes).to_vec(),
            base,
            users,
        })
    }

    /// A field's value (big-endian, as jbd2 stores it).
    pub fn get(&self, field: &'static crate::layout::Field) -> u64 {
        field.read(&self.raw, Endian::Big).unwrap_or(0)
    }

    /// Every field with its offset.
    pub fn fields(&self) -> Vec<crate::layout::FieldValue> {
        decode_table(JOURNAL_SB, &self.raw, Endian::Big, self.base)
    }

    /// The journal superblock as a report (every field raw and shown).
    pub fn report(&self) -> crate::fs::report::Report {
        crate::layout::report(
            "journal superblock",
            "journal superblock".to_owned(),
            JOURNAL_SB,
            &self.raw,
            Endian::Big,
            self.base,
        )
    }

    /// dumpe2fs's journal lines (e2fsprogs' `e2p_list_journal_super`), given
    /// the filesystem's block size and whether it has the fast_commit
    /// feature (which reserves the journal's last blocks).
    pub fn lines(&self, fs_block_size: u64, fast_commit: bool) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut names = Vec::new();
        let word = |f| u32::try_from(self.get(f)).unwrap_or(u32::MAX);
        names.extend(names_of::<JournalCompat>(
            word(jsb!("s_feature_compat")),
            'C',
        ));
        names.extend(names_of::<JournalIncompat>(
            word(jsb!("s_feature_incompat")),
            'I',
        ));
        // No read-only compatible feature has a name.
        names.extend(
            (0..32)
                .map(|bit| (bit, 1u32 << bit))
                .filter(|(_, m)| word(jsb!("s_feature_ro_compat")) & m != 0)
                .map(|(bit, _)| format!("FEATURE_R{bit}")),
        );
        v.push((
            "Journal features".to_owned(),
            if names.is_empty() {
                "(none)".into()
            } else {
                names.join(" ")
            },
        ));
        let maxlen = self.get(jsb!("s_maxlen"));
        let blocksize = self.get(jsb!("s_blocksize"));
        let fc = if fast_commit {
            match self.get(jsb!("s_num_fc_blks")) {
                0 => 256,
                n => n,
            }
        } else {
            0
        };
        let size = (blocksize / 1024).saturating_mul(maxlen);
        v.push((
            "Total journal size".to_owned(),
            if size < 8192 {
                format!("{size}k")
            } else {
                format!("{}M", size >> 10)
            },
        ));
        if blocksize != fs_block_size {
            v.push(("Journal block size".to_owned(), blocksize.to_string()));
        }
        v.push(("Total journal blocks".to_owned(), maxlen.to_string()));
        v.push((
            "Max transaction length".to_owned(),
            maxlen.saturating_sub(fc).to_string(),
        ));
        v.push(("Fast commit length".to_owned(), fc.to_string()));
        if self.get(jsb!("s_first")) != 1 {
            v.push((
                "Journal first block".to_owned(),
                self.get(jsb!("s_first")).to_string(),
            ));
        }
        v.push((
            "Journal sequence".to_owned(),
            format!("{:#010x}", self.get(jsb!("s_sequence"))),
        ));
        v.push((
            "Journal start".to_owned(),
            self.get(jsb!("s_start")).to_string(),
        ));
        let users = self.get(jsb!("s_nr_users"));
        if users != 1 {
            v.push(("Journal number of users".to_owned(), users.to_string()));
        }
        let compat = JournalCompat::from_bits_retain(word(jsb!("s_feature_compat")));
        let incompat = JournalIncompat::from_bits_retain(word(jsb!("s_feature_incompat")));
        if compat.contains(JournalCompat::JOURNAL_CHECKSUM) {
            v.push(("Journal checksum type".to_owned(), "crc32".into()));
        }
        if incompat
            .intersects(JournalIncompat::JOURNAL_CHECKSUM_V2 | JournalIncompat::JOURNAL_CHECKSUM_V3)
        {
            let kind = match self.get(jsb!("s_checksum_type")) {
                4 => "crc32c",
                _ => "unknown",
            };
            v.push(("Journal checksum type".to_owned(), kind.into()));
            v.push((
                "Journal checksum".to_owned(),
                format!("{:#010x}", self.get(jsb!("s_checksum"))),
            ));
        }
        let first_set = self
            .users
            .first()
            .is_some_and(|u| u.iter().any(|&b| b != 0));
        if users > 1 || first_set {
            for (i, u) in self.users.iter().enumerate() {
                // Continuation lines have no name (dumpe2fs indents them).
                let name = if i == 0 { "Journal users" } else { "" };
                v.push((name.to_owned(), uuid_text(u)));
            }
        }
        // A C int on disk.
        let errno = u32::try_from(self.get(jsb!("s_errno")) & 0xffff_ffff).unwrap_or(0);
        let errno = i32::from_le_bytes(errno.to_le_bytes());
        if errno != 0 {
            v.push(("Journal errno".to_owned(), errno.to_string()));
        }
        v
    }
}

/// A UUID as e2fsprogs prints it (`<none>` when all zeros).
pub fn uuid_text(u: &[u8; 16]) -> String {
    if u.iter().all(|&b| b == 0) {
        return "<none>".into();
    }
    let hex = |r: std::ops::Range<usize>| -> String {
        u.get(r)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}
