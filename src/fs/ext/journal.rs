//! The jbd2 journal superblock: the first block of the journal inode,
//! big-endian (unlike the rest of ext4). Decoded for `info`, as dumpe2fs's
//! journal lines.
use crate::layout::{decode_table, value_of, Endian, Field, FieldValue, Kind};

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

const COMPAT: &[(u32, &str)] = &[(1, "journal_checksum")];
/// e2fsprogs' names (1.47 has none for fast commit, 0x20: it prints
/// `FEATURE_I5`).
const INCOMPAT: &[(u32, &str)] = &[
    (1, "journal_incompat_revoke"),
    (2, "journal_64bit"),
    (4, "journal_async_commit"),
    (8, "journal_checksum_v2"),
    (0x10, "journal_checksum_v3"),
];
/// Most users a shared journal lists (`JBD2_USERS_MAX`).
const USERS_MAX: usize = 48;

/// A decoded journal superblock.
#[derive(Clone, Debug)]
pub struct JournalSb {
    pub fields: Vec<FieldValue>,
    /// `s_users`: the UUIDs of the filesystems sharing the journal (as
    /// many as `s_nr_users` says, at most 48).
    pub users: Vec<[u8; 16]>,
}

impl JournalSb {
    /// Decodes the first journal block; `None` without the magic.
    pub fn decode(bytes: &[u8], base: u64) -> Option<JournalSb> {
        let fields = decode_table(JOURNAL_SB, bytes, Endian::Big, base);
        if value_of(&fields, "h_magic") != Some(u64::from(MAGIC)) {
            return None;
        }
        let nr = value_of(&fields, "s_nr_users").unwrap_or(0);
        let users = (0..usize::try_from(nr).unwrap_or(USERS_MAX).min(USERS_MAX))
            .map_while(|i| {
                let at = 0x100 + i * 16;
                let mut u = [0u8; 16];
                u.copy_from_slice(bytes.get(at..at + 16)?);
                Some(u)
            })
            .collect();
        Some(JournalSb { fields, users })
    }

    fn get(&self, name: &str) -> u64 {
        value_of(&self.fields, name).unwrap_or(0)
    }

    /// dumpe2fs's journal lines (e2fsprogs' `e2p_list_journal_super`), given
    /// the filesystem's block size and whether it has the fast_commit
    /// feature (which reserves the journal's last blocks).
    pub fn lines(&self, fs_block_size: u64, fast_commit: bool) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut names = Vec::new();
        for (value, table, letter) in [
            (self.get("s_feature_compat"), COMPAT, 'C'),
            (self.get("s_feature_incompat"), INCOMPAT, 'I'),
            (self.get("s_feature_ro_compat"), &[][..], 'R'),
        ] {
            for bit in 0..32 {
                let m = 1u32 << bit;
                if value as u32 & m != 0 {
                    names.push(table.iter().find(|(b, _)| *b == m).map_or_else(
                        || format!("FEATURE_{letter}{bit}"),
                        |(_, n)| (*n).to_owned(),
                    ));
                }
            }
        }
        v.push((
            "Journal features".to_owned(),
            if names.is_empty() {
                "(none)".into()
            } else {
                names.join(" ")
            },
        ));
        let maxlen = self.get("s_maxlen");
        let blocksize = self.get("s_blocksize");
        let fc = if fast_commit {
            match self.get("s_num_fc_blks") {
                0 => 256,
                n => n,
            }
        } else {
            0
        };
        let size = (blocksize / 1024) * maxlen;
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
        if self.get("s_first") != 1 {
            v.push((
                "Journal first block".to_owned(),
                self.get("s_first").to_string(),
            ));
        }
        v.push((
            "Journal sequence".to_owned(),
            format!("{:#010x}", self.get("s_sequence")),
        ));
        v.push(("Journal start".to_owned(), self.get("s_start").to_string()));
        let users = self.get("s_nr_users");
        if users != 1 {
            v.push(("Journal number of users".to_owned(), users.to_string()));
        }
        if self.get("s_feature_compat") & 1 != 0 {
            v.push(("Journal checksum type".to_owned(), "crc32".into()));
        }
        if self.get("s_feature_incompat") & 0x18 != 0 {
            let kind = match self.get("s_checksum_type") {
                4 => "crc32c",
                _ => "unknown",
            };
            v.push(("Journal checksum type".to_owned(), kind.into()));
            v.push((
                "Journal checksum".to_owned(),
                format!("{:#010x}", self.get("s_checksum")),
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
        let errno = self.get("s_errno") as u32 as i32;
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
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}
