//! The ext2/3/4 decoder against the e2fsprogs tools (dumpe2fs, debugfs) on
//! filesystems made by mke2fs in each test, through qcow2 chains, and over
//! the e2fsprogs test corpus.
use std::collections::BTreeMap;

use crate::util::*;

pub(crate) mod corpus;
mod damage;
pub(crate) mod files;
pub(crate) mod info;
mod layouts;
mod trait_walk;
mod view;

/// `Name: value` lines, whitespace collapsed.
fn pairs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

fn tools() -> bool {
    need("mke2fs") && need("dumpe2fs") && need("qemu-img")
}
