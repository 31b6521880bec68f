//! Big-endian reads at an offset of a byte slice, `None` past its end:
//! every XFS structure is big-endian (CRCs aside), and every read of disk
//! bytes goes through these so a short or damaged buffer can never panic.
//!
//! They are the crate's readers ([`crate::bytes`]) under the names the
//! XFS code uses, which say the width and not the byte order.
pub use crate::bytes::{
    be16 as u16_at, be32 as u32_at, be64 as u64_at, slice as bytes_at, u64_of, u8_at, us,
};
