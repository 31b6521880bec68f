//! Layer diff on kernel-written live snapshots.
