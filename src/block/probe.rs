//! Telling image formats apart by their first bytes, the way qemu probes.
//!
//! layerscope reads qcow2, VMDK, VHD, VHDX, VDI and raw. Files of other formats are
//! recognised only to refuse them with a useful name instead of showing
//! their metadata as if it were a disk.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use serde::Serialize;

/// A format layerscope can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Qcow2,
    Raw,
    Vmdk,
    Vpc,
    Vhdx,
    Vdi,
    /// An NBD export (chosen by the URI, never by `--format`).
    #[value(skip)]
    Nbd,
}

impl Format {
    /// qemu's name for the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Vpc => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Nbd => "nbd",
        }
    }

    /// Parses qemu's name (as in a backing-format header extension).
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "qcow2" => Some(Format::Qcow2),
            "raw" => Some(Format::Raw),
            "vmdk" => Some(Format::Vmdk),
            "vpc" => Some(Format::Vpc),
            "vhdx" => Some(Format::Vhdx),
            "vdi" => Some(Format::Vdi),
            _ => None,
        }
    }
}

/// What the first bytes of a file say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Readable(Format),
    /// Another image format, by name.
    Foreign(&'static str),
}

/// Guesses the format from the first bytes (at least 512 when the file has
/// them) and the tail (the last 512 bytes, for formats with a footer).
pub fn probe(head: &[u8], tail: &[u8]) -> Probe {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"QFI\xfb") {
        return match crate::bytes::be32(head, 4) {
            Some(1) => Probe::Foreign("qcow version 1"),
            _ => Probe::Readable(Format::Qcow2),
        };
    }
    if starts(b"KDMV") || starts(b"COWD") || vmdk_descriptor(head) {
        return Probe::Readable(Format::Vmdk);
    }
    if starts(b"conectix") {
        return Probe::Readable(Format::Vpc);
    }
    if starts(b"vhdxfile") {
        return Probe::Readable(Format::Vhdx);
    }
    const MAGICS: &[(&[u8], &str)] = &[
        (b"WithoutFreeSpace", "Parallels"),
        (b"WithouFreSpacExt", "Parallels"),
        (b"Bochs Virtual HD Image", "Bochs"),
        (b"QED\0", "QED"),
        (b"LUKS\xba\xbe", "LUKS"),
        (b"#!/bin/sh\n#V2.0 Format", "cloop"),
    ];
    for (magic, name) in MAGICS {
        if starts(magic) {
            return Probe::Foreign(name);
        }
    }
    // VDI: signature 0xbeda107f at offset 64.
    if head.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return Probe::Readable(Format::Vdi);
    }
    // VHD fixed disks and DMG keep their signature in a 512-byte footer.
    if let Some(footer) = tail.len().checked_sub(512).and_then(|at| tail.get(at..)) {
        // A fixed VHD: qemu probes it as raw (its footer is at the end);
        // reading it as raw would show the footer as the disk's last
        // sector, so it is read as VHD (`chain` says so).
        if footer.starts_with(b"conectix") {
            return Probe::Readable(Format::Vpc);
        }
        if footer.starts_with(b"koly") {
            return Probe::Foreign("DMG");
        }
    }
    Probe::Readable(Format::Raw)
}

/// qemu's `vmdk_probe` for text: comment lines (`#`) and blank lines
/// (spaces only) may come first, then a `version=1`, `2` or `3` line.
fn vmdk_descriptor(head: &[u8]) -> bool {
    for line in head.split_inclusive(|&b| b == b'\n') {
        match line.first() {
            Some(b'#') => continue,
            Some(b' ') => {
                let spaces = line.iter().take_while(|&&b| b == b' ').count();
                let rest = line.get(spaces..).unwrap_or_default();
                let rest = rest.strip_prefix(b"\r").unwrap_or(rest);
                if rest == b"\n" {
                    continue;
                }
                return false;
            }
            _ => {
                return [b"1", b"2", b"3"].iter().any(|v| {
                    let mut n = b"version=".to_vec();
                    n.extend_from_slice(*v);
                    line.strip_prefix(n.as_slice())
                        .is_some_and(|r| r == b"\n" || r == b"\r\n")
                })
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_magics() {
        assert_eq!(
            probe(b"QFI\xfb\0\0\0\x03", &[]),
            Probe::Readable(Format::Qcow2)
        );
        assert_eq!(
            probe(b"QFI\xfb\0\0\0\x01", &[]),
            Probe::Foreign("qcow version 1")
        );
        assert_eq!(probe(b"KDMV\x01", &[]), Probe::Readable(Format::Vmdk));
        assert_eq!(
            probe(b"# Disk DescriptorFile\nversion=1\nCID=1\n", &[]),
            Probe::Readable(Format::Vmdk)
        );
        assert_eq!(
            probe(b"#c\n  \r\nversion=2\r\n", &[]),
            Probe::Readable(Format::Vmdk)
        );
        assert_eq!(probe(b"version=4\n", &[]), Probe::Readable(Format::Raw));
        assert_eq!(probe(b"x\nversion=1\n", &[]), Probe::Readable(Format::Raw));
        assert_eq!(
            probe(&[0u8; 512], &[0u8; 512]),
            Probe::Readable(Format::Raw)
        );
        let mut tail = vec![0u8; 512];
        tail[..4].copy_from_slice(b"koly");
        assert_eq!(probe(&[0u8; 512], &tail), Probe::Foreign("DMG"));
    }
}
