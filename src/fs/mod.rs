//! Filesystems inside the disk. They read only through a
//! [`crate::block::BlockSource`], so a raw file, a qcow2 chain (as of any
//! layer) and an NBD export look the same to them.
pub mod ext;
