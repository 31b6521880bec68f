//! Damaged journals.
