//! A small writer of differencing disks qemu cannot make: VHD (from "Virtual
//! Hard Disk Image Format Specification" 1.0), VHDX (MS-VHDX) and VDI
//! (VirtualBox's VDI header 1.1). It writes only what a reader needs:
//! headers with correct checksums, the allocation table, sector bitmaps
//! and data, and the parent links (locators, UUIDs).
//!
//! Writes are (offset, bytes), 512-byte aligned; the tests compare what
//! layerscope reads with the parent's bytes with these writes applied.

/// Sector-aligned writes: (offset, bytes).
pub type Writes = Vec<(u64, Vec<u8>)>;

/// The bytes of `base` with `writes` applied.
pub fn apply(base: &[u8], writes: &Writes) -> Vec<u8> {
    let mut out = base.to_vec();
    for (off, data) in writes {
        let at = *off as usize;
        out[at..at + data.len()].copy_from_slice(data);
    }
    out
}

/// A deterministic pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32 * 7) as u8 ^ seed)
        .collect()
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

fn vhd_checksum(b: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if !(field..field + 4).contains(&i) {
            sum = sum.wrapping_add(x as u32);
        }
    }
    !sum
}

/// The parent's VHD footer: (unique id, the 512 bytes).
pub fn vhd_footer_of(parent: &[u8]) -> ([u8; 16], Vec<u8>) {
    let f = &parent[parent.len() - 512..];
    assert_eq!(&f[..8], b"conectix");
    (f[68..84].try_into().unwrap(), f.to_vec())
}

/// A VHD differencing disk over `parent` (its file bytes), naming it by
/// `rel` (relative, Windows style `.\name`, in a W2ru locator), `abs` (a
/// W2ku locator) and its file name; `writes` are stored with their
/// sector bitmaps. `uuid` is this disk's unique ID.
pub fn vhd_differencing(
    parent: &[u8],
    rel: &str,
    abs: &str,
    name: &str,
    uuid: [u8; 16],
    writes: &Writes,
) -> Vec<u8> {
    let (parent_uuid, pfooter) = vhd_footer_of(parent);
    let block: u64 = 2 << 20;
    let bitmap: u64 = 512;
    // The child's footer: the parent's geometry and sizes, type 4.
    let mut footer = pfooter.clone();
    footer[16..24].copy_from_slice(&512u64.to_be_bytes());
    footer[28..32].copy_from_slice(b"lsct");
    footer[60..64].copy_from_slice(&4u32.to_be_bytes());
    footer[68..84].copy_from_slice(&uuid);
    let c = vhd_checksum(&footer, 64);
    footer[64..68].copy_from_slice(&c.to_be_bytes());
    let size = u64::from_be_bytes(pfooter[48..56].try_into().unwrap());
    let entries = size.div_ceil(block);
    let bat_at = 512 + 1024;
    let bat_bytes = (entries * 4).div_ceil(512) * 512;
    let rel16 = utf16le(rel);
    let abs16 = utf16le(abs);
    let loc1 = bat_at + bat_bytes;
    let loc2 = loc1 + 512;
    let mut data_at = loc2 + 512;
    assert!(rel16.len() <= 512 && abs16.len() <= 512);
    // Dynamic header.
    let mut dh = vec![0u8; 1024];
    dh[..8].copy_from_slice(b"cxsparse");
    dh[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    dh[16..24].copy_from_slice(&bat_at.to_be_bytes());
    dh[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    dh[28..32].copy_from_slice(&(entries as u32).to_be_bytes());
    dh[32..36].copy_from_slice(&(block as u32).to_be_bytes());
    dh[40..56].copy_from_slice(&parent_uuid);
    let pname = utf16be(name);
    dh[64..64 + pname.len()].copy_from_slice(&pname);
    for (i, (code, at, len)) in [(b"W2ru", loc1, rel16.len()), (b"W2ku", loc2, abs16.len())]
        .into_iter()
        .enumerate()
    {
        let e = 576 + i * 24;
        dh[e..e + 4].copy_from_slice(code);
        dh[e + 4..e + 8].copy_from_slice(&1u32.to_be_bytes());
        dh[e + 8..e + 12].copy_from_slice(&(len as u32).to_be_bytes());
        dh[e + 16..e + 24].copy_from_slice(&at.to_be_bytes());
    }
    let c = vhd_checksum(&dh, 36);
    dh[36..40].copy_from_slice(&c.to_be_bytes());
    // Blocks: bitmap (MSB first) then data.
    let mut bat = vec![0xffu8; bat_bytes as usize];
    let mut blocks: std::collections::BTreeMap<u64, (Vec<u8>, Vec<u8>)> = Default::default();
    for (off, bytes) in writes {
        assert!(off % 512 == 0 && bytes.len() % 512 == 0);
        for (k, sector) in bytes.chunks(512).enumerate() {
            let pos = off + k as u64 * 512;
            let (b, inb) = (pos / block, pos % block);
            let (bm, data) = blocks
                .entry(b)
                .or_insert_with(|| (vec![0u8; bitmap as usize], vec![0u8; block as usize]));
            let s = (inb / 512) as usize;
            bm[s / 8] |= 0x80 >> (s % 8);
            data[inb as usize..inb as usize + 512].copy_from_slice(sector);
        }
    }
    let mut file = vec![0u8; data_at as usize];
    file[..512].copy_from_slice(&footer);
    file[512..1536].copy_from_slice(&dh);
    file[loc1 as usize..loc1 as usize + rel16.len()].copy_from_slice(&rel16);
    file[loc2 as usize..loc2 as usize + abs16.len()].copy_from_slice(&abs16);
    for (b, (bm, data)) in blocks {
        bat[b as usize * 4..b as usize * 4 + 4]
            .copy_from_slice(&((data_at / 512) as u32).to_be_bytes());
        file.extend_from_slice(&bm);
        file.extend_from_slice(&data);
        data_at += bitmap + block;
    }
    file[bat_at as usize..(bat_at + bat_bytes) as usize].copy_from_slice(&bat);
    file.extend_from_slice(&footer);
    file
}
