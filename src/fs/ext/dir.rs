//! Directory entries. Reading every block of a directory linearly lists
//! htree directories too: their index blocks look like empty entries, and
//! their leaves are ordinary entry blocks.
use super::error::FsError;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub inode: u32,
    /// The name's raw bytes (may be any bytes but `/` and NUL).
    #[serde(skip)]
    pub name: Vec<u8>,
    pub file_type: u8,
}

impl Entry {
    /// The name for display: lossy UTF-8, escaped for terminals.
    pub fn display_name(&self) -> String {
        crate::escape::printable(&String::from_utf8_lossy(&self.name))
    }
}

/// The entries of one directory block. A damaged entry ends the block with
/// an error describing it; entries before it are kept (`partial`).
pub fn parse_block(block: &[u8], block_offset: u64, out: &mut Vec<Entry>) -> Result<(), FsError> {
    let mut pos = 0usize;
    while pos + 8 <= block.len() {
        let inode =
            u32::from_le_bytes([block[pos], block[pos + 1], block[pos + 2], block[pos + 3]]);
        let rec_len = usize::from(u16::from_le_bytes([block[pos + 4], block[pos + 5]]));
        let name_len = usize::from(block[pos + 6]);
        let file_type = block[pos + 7];
        // rec_len 0 in a 64 KiB block means 65536 (ext4_rec_len_from_disk).
        let rec_len = if rec_len == 0 && block.len() == 65536 {
            65536
        } else {
            rec_len
        };
        if rec_len < 8 || rec_len % 4 != 0 || pos + rec_len > block.len() || 8 + name_len > rec_len
        {
            return Err(FsError::corrupt(
                "directory entry",
                "rec_len",
                block_offset + pos as u64,
                format!(
                    "rec_len {rec_len}, name_len {name_len} at byte {pos} of a {}-byte block",
                    block.len()
                ),
            ));
        }
        // inode 0: unused slot, htree index node, or the checksum tail.
        if inode != 0 && name_len > 0 {
            out.push(Entry {
                inode,
                name: block[pos + 8..pos + 8 + name_len].to_vec(),
                file_type,
            });
        }
        pos += rec_len;
    }
    Ok(())
}
