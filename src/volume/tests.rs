//! Bad input for the tables, built in memory with valid CRCs so each check
//! is reached: every case is a problem naming the table and entry, never a
//! panic and never a guessed partition.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
use std::sync::Arc;

use super::*;
use crate::block::raw::RawFile;
use crate::block::storage::MemStorage;

fn disk(bytes: Vec<u8>) -> Arc<dyn BlockSource> {
    Arc::new(RawFile::new("mem", Arc::new(MemStorage::new(bytes))))
}

fn mbr_entry(b: &mut [u8], at: usize, kind: u8, start: u32, sectors: u32) {
    b[at + 4] = kind;
    b[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
    b[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    b[510] = 0x55;
    b[511] = 0xaa;
}

/// A GPT disk of `sectors` sectors: protective MBR, primary header and
/// entries at LBA 2, the backup at the end; `entries` are (first, last)
/// LBAs; `edit` changes the header before its CRCs are computed.
fn gpt_disk(sectors: usize, entries: &[(u64, u64)], edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut b = vec![0u8; sectors * 512];
    mbr_entry(&mut b, 446, 0xee, 1, (sectors - 1) as u32);
    let mut array = vec![0u8; 128 * 128];
    for (i, &(first, last)) in entries.iter().enumerate() {
        let e = &mut array[i * 128..];
        e[0] = 0xaf; // some type GUID
        e[16] = i as u8 + 1;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let last = sectors as u64 - 1;
    for (lba, alt, entries_lba) in [(1u64, last, 2u64), (last, 1, last - 32)] {
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&array).to_le_bytes());
        edit(&mut h);
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        let at = lba as usize * 512;
        b[at..at + 92].copy_from_slice(&h);
        let e = entries_lba as usize * 512;
        b[e..e + array.len()].copy_from_slice(&array);
    }
    b
}

fn problems(t: &Table) -> String {
    t.problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_sound_gpt_reads_and_checks_both_headers() {
    let t = scan(disk(gpt_disk(2048, &[(34, 99), (100, 2000)], |_| {})))
        .unwrap()
        .table
        .unwrap();
    assert_eq!(t.label, "gpt");
    assert!(t.problems.is_empty(), "{}", problems(&t));
    let got: Vec<(u32, u64, u64)> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.len))
        .collect();
    assert_eq!(
        got,
        vec![(1, 34 * 512, 66 * 512), (2, 100 * 512, 1901 * 512)]
    );
    let g = t.gpt.unwrap();
    assert_eq!(g.used, "primary");
    assert!(g.primary.header_crc.unwrap().ok() && g.backup.unwrap().entries_crc.unwrap().ok());
}

#[test]
fn huge_lbas_are_problems_not_wrapped_offsets() {
    // 2^55 + 2048 sectors is 2^64 + 1 MiB bytes: wrapped, it would read
    // at 1 MiB; 2^62 wraps to 0.
    for first in [(1u64 << 55) + 2048, 1 << 62, u64::MAX - 20] {
        let t = scan(disk(gpt_disk(2048, &[(first, first + 10)], |_| {})))
            .unwrap()
            .table
            .unwrap();
        assert!(t.partitions.is_empty(), "{first}: {:?}", t.partitions);
        let p = problems(&t);
        assert!(
            p.contains("gpt partition 1") && p.contains("passes the end of the disk"),
            "{p}"
        );
    }
    // Last before first.
    let t = scan(disk(gpt_disk(2048, &[(500, 100)], |_| {})))
        .unwrap()
        .table
        .unwrap();
    assert!(t.partitions.is_empty() && problems(&t).contains("before starting LBA"));
}

#[test]
fn absurd_entry_arrays_are_problems() {
    for (count, size, want) in [
        (u32::MAX, 128u32, "more than the 1048576-byte limit"),
        (128, 0, "entry size 0"),
        (128, 1 << 31, "entry size 2147483648"),
        (128, 129, "entry size 129"),
    ] {
        let b = gpt_disk(2048, &[(34, 99)], |h| {
            h[80..84].copy_from_slice(&count.to_le_bytes());
            h[84..88].copy_from_slice(&size.to_le_bytes());
        });
        let t = scan(disk(b)).unwrap().table.unwrap();
        let p = problems(&t);
        assert!(t.partitions.is_empty(), "{want}: {:?}", t.partitions);
        assert!(
            p.contains("GPT primary header at LBA 1") && p.contains(want),
            "{want}: {p}"
        );
        assert!(p.contains("no partition is read"), "{p}");
        assert_eq!(t.gpt.unwrap().used, "none");
    }
}

#[test]
fn a_bad_primary_header_gives_way_to_the_backup() {
    let mut b = gpt_disk(2048, &[(34, 99)], |_| {});
    b[512 + 40] ^= 1; // first_usable_lba: header CRC now wrong
    let t = scan(disk(b.clone())).unwrap().table.unwrap();
    let p = problems(&t);
    assert!(
        p.contains("GPT primary header at LBA 1") && p.contains("header CRC"),
        "{p}"
    );
    assert!(p.contains("using the backup header at LBA 2047"), "{p}");
    assert_eq!(t.partitions.len(), 1);
    assert_eq!(t.gpt.as_ref().unwrap().used, "backup");
    // A damaged backup while the primary is sound: a warning only.
    let mut b = gpt_disk(2048, &[(34, 99)], |_| {});
    b[2047 * 512 + 40] ^= 1;
    let t = scan(disk(b)).unwrap().table.unwrap();
    assert!(problems(&t).contains("GPT backup header at LBA 2047"));
    assert_eq!(t.gpt.unwrap().used, "primary");
}

#[test]
fn overlapping_partitions_are_flagged() {
    let t = scan(disk(gpt_disk(
        2048,
        &[(34, 500), (400, 900), (901, 1000)],
        |_| {},
    )))
    .unwrap()
    .table
    .unwrap();
    assert_eq!(t.partitions.len(), 3);
    let p = problems(&t);
    assert!(
        p.contains("gpt partition 2") && p.contains("overlaps partition 1"),
        "{p}"
    );
    assert_eq!(t.problems.len(), 1, "{p}");
}

#[test]
fn mbr_logical_partitions_loops_and_overflows() {
    let mut b = vec![0u8; 1 << 20];
    mbr_entry(&mut b, 446, 0x83, 8, 100);
    mbr_entry(&mut b, 462, 0x05, 200, 1000);
    // EBR at sector 200: a logical partition, then a link to itself.
    let ebr = 200 * 512;
    mbr_entry(&mut b[ebr..], 446, 0x83, 2, 50);
    mbr_entry(&mut b[ebr..], 462, 0x05, 0, 10);
    let tree = scan(disk(b.clone())).unwrap();
    let t = tree.table.as_ref().unwrap();
    assert_eq!(t.label, "dos");
    let found: Vec<(u32, u64, u64, bool)> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.len, p.logical))
        .collect();
    assert_eq!(
        found,
        vec![
            (1, 8 * 512, 100 * 512, false),
            (2, 200 * 512, 1000 * 512, false),
            (5, 202 * 512, 50 * 512, true)
        ]
    );
    assert!(problems(t).contains("EBR chain loops"), "{}", problems(t));
    // The extended container is listed, not opened.
    assert!(tree.find("p2").unwrap().unsupported.is_some());
    assert!(tree.find("5").is_some());
    // A two-EBR loop (A -> B -> A) ends too.
    let mut b2 = b.clone();
    mbr_entry(&mut b2[ebr..], 462, 0x05, 100, 10);
    let ebr2 = 300 * 512;
    mbr_entry(&mut b2[ebr2..], 446, 0x83, 2, 20);
    mbr_entry(&mut b2[ebr2..], 462, 0x05, 0, 10);
    let t = scan(disk(b2)).unwrap().table.unwrap();
    assert_eq!(t.partitions.len(), 4);
    assert!(problems(&t).contains("EBR chain loops"));
    // An entry past the end (u32 sectors from a u32 start) is a problem.
    let mut b3 = vec![0u8; 64 << 10];
    mbr_entry(&mut b3, 446, 0x83, u32::MAX, u32::MAX);
    let t = scan(disk(b3)).unwrap().table.unwrap();
    assert!(t.partitions.is_empty() && problems(&t).contains("dos partition 1"));
    // No signature, or a tiny disk: no table.
    assert!(scan(disk(vec![0u8; 4096])).unwrap().table.is_none());
    assert!(scan(disk(vec![0u8; 100])).unwrap().table.is_none());
}

#[test]
fn choosing_a_volume() {
    let b = gpt_disk(2048, &[(34, 99), (100, 2000)], |_| {});
    let d = disk(b);
    let tree = scan(d.clone()).unwrap();
    let opened = tree
        .choose(&d, Some("p2"), |s| Ok::<u64, ()>(s.len()))
        .unwrap();
    assert_eq!((opened.0.name.as_str(), opened.1), ("p2", 1901 * 512));
    let e = tree
        .choose(&d, Some("p9"), |s| Ok::<u64, ()>(s.len()))
        .unwrap_err();
    assert!(e.to_string().contains("no volume \"p9\""), "{e}");
    // Nothing identified as a filesystem: none qualifies.
    let e = tree
        .choose(&d, None, |s| Ok::<u64, ()>(s.len()))
        .unwrap_err();
    assert!(
        e.to_string().contains("no volume holds a filesystem"),
        "{e}"
    );
}
