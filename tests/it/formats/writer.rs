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

fn crc32c_with_zero(b: &[u8], field: usize) -> u32 {
    let mut c = b.to_vec();
    c[field..field + 4].fill(0);
    crc32c::crc32c(&c)
}

/// A Microsoft GUID (on-disk order) as `{XXXXXXXX-XXXX-…}` text.
pub fn guid_braced(g: &[u8; 16]) -> String {
    let mut r = *g;
    r[..4].reverse();
    r[4..6].reverse();
    r[6..8].reverse();
    let h: String = r.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{{{}-{}-{}-{}-{}}}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The current header's data write GUID and the virtual size of a VHDX.
pub fn vhdx_identity(file: &[u8]) -> ([u8; 16], u64) {
    let hdr = |at: usize| {
        let h = &file[at..at + 4096];
        let seq = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let ok = &h[..4] == b"head"
            && crc32c_with_zero(h, 4) == u32::from_le_bytes(h[4..8].try_into().unwrap());
        (ok, seq, <[u8; 16]>::try_from(&h[32..48]).unwrap())
    };
    let (a, b) = (hdr(64 << 10), hdr(128 << 10));
    let guid = match (a.0, b.0) {
        (true, false) => a.2,
        (false, true) => b.2,
        _ if a.1 >= b.1 => a.2,
        _ => b.2,
    };
    // Virtual size: find the metadata region in the region table, then
    // the virtual disk size item.
    let rt = &file[192 << 10..256 << 10];
    let count = u32::from_le_bytes(rt[8..12].try_into().unwrap()) as usize;
    let meta_guid = [
        0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88,
        0x6e,
    ];
    let mut size = 0;
    for i in 0..count {
        let e = &rt[16 + i * 32..48 + i * 32];
        if e[..16] == meta_guid {
            let m = u64::from_le_bytes(e[16..24].try_into().unwrap()) as usize;
            let n = u16::from_le_bytes(file[m + 10..m + 12].try_into().unwrap()) as usize;
            for j in 0..n {
                let it = &file[m + 32 + j * 32..m + 64 + j * 32];
                if it[..4] == [0x24, 0x42, 0xa5, 0x2f] {
                    let off = u32::from_le_bytes(it[16..20].try_into().unwrap()) as usize;
                    size = u64::from_le_bytes(file[m + off..m + off + 8].try_into().unwrap());
                }
            }
        }
    }
    (guid, size)
}

/// Block states the VHDX writer can give a block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum VhdxBlock {
    /// PAYLOAD_BLOCK_ZERO: reads as zeros, hides the parent.
    Zero,
}

/// A VHDX differencing disk (1 MiB blocks, 512-byte sectors) over
/// `parent` (its file bytes): locator with `relative_path`,
/// `absolute_win32_path` and `parent_linkage` (the parent's data write
/// GUID, or `linkage` when given). Whole written blocks are fully present;
/// others partially present with their sectors in the sector bitmap.
/// `zero_blocks` are blocks marked PAYLOAD_BLOCK_ZERO.
pub fn vhdx_differencing(
    parent: &[u8],
    rel: &str,
    abs: &str,
    own: [u8; 16],
    linkage: Option<[u8; 16]>,
    writes: &Writes,
    zero_blocks: &[(u64, VhdxBlock)],
) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    let (parent_guid, size) = vhdx_identity(parent);
    let linkage = linkage.unwrap_or(parent_guid);
    let block = MIB as u64;
    let chunk_ratio = (1u64 << 23) * 512 / block;
    let data_blocks = size.div_ceil(block);
    let bat_entries = data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1);
    let mut file = vec![0u8; 4 * MIB];
    file[..8].copy_from_slice(b"vhdxfile");
    let creator: Vec<u8> = "layerscope test writer"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    file[8..8 + creator.len()].copy_from_slice(&creator);
    for (at, seq) in [(64 << 10, 1u64), (128 << 10, 2u64)] {
        let h = &mut file[at..at + 4096];
        h[..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..32].copy_from_slice(&[0x11; 16]);
        h[32..48].copy_from_slice(&own);
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        h[68..72].copy_from_slice(&(MIB as u32).to_le_bytes());
        h[72..80].copy_from_slice(&(MIB as u64).to_le_bytes());
        let c = crc32c_with_zero(h, 4);
        h[4..8].copy_from_slice(&c.to_le_bytes());
    }
    let bat_guid = [
        0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a,
        0x08,
    ];
    let meta_guid = [
        0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88,
        0x6e,
    ];
    let bat_len = (bat_entries * 8).div_ceil(block) * block;
    for at in [192 << 10, 256 << 10] {
        let t = &mut file[at..at + (64 << 10)];
        t[..4].copy_from_slice(b"regi");
        t[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (i, (g, off, len)) in [
            (bat_guid, 3 * MIB as u64, bat_len),
            (meta_guid, 2 * MIB as u64, block),
        ]
        .into_iter()
        .enumerate()
        {
            let e = &mut t[16 + i * 32..48 + i * 32];
            e[..16].copy_from_slice(&g);
            e[16..24].copy_from_slice(&off.to_le_bytes());
            e[24..28].copy_from_slice(&(len as u32).to_le_bytes());
            e[28..32].copy_from_slice(&1u32.to_le_bytes());
        }
        let c = crc32c_with_zero(t, 4);
        t[4..8].copy_from_slice(&c.to_le_bytes());
    }
    // Metadata: table, then items from 64 KiB on.
    let guid = |d1: u32, d2: u16, d3: u16, d4: [u8; 8]| {
        let mut g = [0u8; 16];
        g[..4].copy_from_slice(&d1.to_le_bytes());
        g[4..6].copy_from_slice(&d2.to_le_bytes());
        g[6..8].copy_from_slice(&d3.to_le_bytes());
        g[8..].copy_from_slice(&d4);
        g
    };
    let mut loc = vec![0u8; 20];
    loc[..16].copy_from_slice(&guid(
        0xb04aefb7,
        0xd19e,
        0x4a81,
        [0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13],
    ));
    let pairs = [
        ("parent_linkage", guid_braced(&linkage)),
        ("relative_path", rel.to_owned()),
        ("absolute_win32_path", abs.to_owned()),
    ];
    loc[18..20].copy_from_slice(&(pairs.len() as u16).to_le_bytes());
    loc.resize(20 + pairs.len() * 12, 0);
    for (i, (k, v)) in pairs.iter().enumerate() {
        let (k, v) = (utf16le(k), utf16le(v));
        let ko = loc.len() as u32;
        loc.extend_from_slice(&k);
        let vo = loc.len() as u32;
        loc.extend_from_slice(&v);
        let e = 20 + i * 12;
        loc[e..e + 4].copy_from_slice(&ko.to_le_bytes());
        loc[e + 4..e + 8].copy_from_slice(&vo.to_le_bytes());
        loc[e + 8..e + 10].copy_from_slice(&(k.len() as u16).to_le_bytes());
        loc[e + 10..e + 12].copy_from_slice(&(v.len() as u16).to_le_bytes());
    }
    let mut params = (block as u32).to_le_bytes().to_vec();
    params.extend_from_slice(&2u32.to_le_bytes());
    let items: Vec<([u8; 16], Vec<u8>, u32)> = vec![
        (
            guid(
                0xcaa16737,
                0xfa36,
                0x4d43,
                [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
            ),
            params,
            4,
        ),
        (
            guid(
                0x2fa54224,
                0xcd1b,
                0x4876,
                [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
            ),
            size.to_le_bytes().to_vec(),
            6,
        ),
        (
            guid(
                0xbeca12ab,
                0xb2e6,
                0x4523,
                [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
            ),
            vec![0x42; 16],
            6,
        ),
        (
            guid(
                0x8141bf1d,
                0xa96f,
                0x4709,
                [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
            ),
            512u32.to_le_bytes().to_vec(),
            6,
        ),
        (
            guid(
                0xcda348c7,
                0x445d,
                0x4471,
                [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
            ),
            4096u32.to_le_bytes().to_vec(),
            6,
        ),
        (
            guid(
                0xa8d35f2d,
                0xb30b,
                0x454d,
                [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
            ),
            loc,
            4,
        ),
    ];
    let m = 2 * MIB;
    file[m..m + 8].copy_from_slice(b"metadata");
    file[m + 10..m + 12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    let mut item_at = 64 << 10;
    for (i, (g, data, flags)) in items.iter().enumerate() {
        let e = m + 32 + i * 32;
        file[e..e + 16].copy_from_slice(g);
        file[e + 16..e + 20].copy_from_slice(&(item_at as u32).to_le_bytes());
        file[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        file[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
        file[m + item_at..m + item_at + data.len()].copy_from_slice(data);
        item_at += data.len().div_ceil(8) * 8;
    }
    // Blocks and sector bitmaps.
    let mut bat = vec![0u64; bat_entries as usize];
    let mut blocks: std::collections::BTreeMap<u64, (Vec<u8>, Vec<bool>)> = Default::default();
    for (off, bytes) in writes {
        for (k, sector) in bytes.chunks(512).enumerate() {
            let pos = off + k as u64 * 512;
            let (b, inb) = (pos / block, (pos % block) as usize);
            let (data, present) = blocks
                .entry(b)
                .or_insert_with(|| (vec![0u8; block as usize], vec![false; block as usize / 512]));
            data[inb..inb + 512].copy_from_slice(sector);
            present[inb / 512] = true;
        }
    }
    let mut bitmaps: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
    let mut next = file.len().max(4 * MIB);
    file.resize(next, 0);
    for (b, (data, present)) in &blocks {
        let index = (b + b / chunk_ratio) as usize;
        let full = present.iter().all(|&p| p);
        bat[index] = next as u64 | if full { 6 } else { 7 };
        file.extend_from_slice(data);
        next += MIB;
        if !full {
            let chunk = b / chunk_ratio;
            let bm = bitmaps.entry(chunk).or_insert_with(|| vec![0u8; MIB]);
            let first = (b % chunk_ratio) as usize * (block as usize / 512);
            for (s, &p) in present.iter().enumerate() {
                if p {
                    bm[(first + s) / 8] |= 1 << ((first + s) % 8);
                }
            }
        }
    }
    for (chunk, bm) in bitmaps {
        let index = (chunk * (chunk_ratio + 1) + chunk_ratio) as usize;
        bat[index] = next as u64 | 6;
        file.extend_from_slice(&bm);
        next += MIB;
    }
    for (b, VhdxBlock::Zero) in zero_blocks {
        bat[(b + b / chunk_ratio) as usize] = 2;
    }
    let bat_at = 3 * MIB;
    for (i, e) in bat.iter().enumerate() {
        file[bat_at + i * 8..bat_at + i * 8 + 8].copy_from_slice(&e.to_le_bytes());
    }
    file
}

/// A VDI differencing image over `parent` (its file bytes; its flattened
/// disk is `parent_flat`): whole 1 MiB blocks copied up from the parent
/// with `writes` applied; `discard` blocks are marked discarded (zeros).
pub fn vdi_differencing(
    parent: &[u8],
    parent_flat: &[u8],
    own: [u8; 16],
    writes: &Writes,
    discard: &[u64],
) -> Vec<u8> {
    const MIB: u64 = 1 << 20;
    let mut h = parent[..512].to_vec();
    assert_eq!(
        u32::from_le_bytes(h[64..68].try_into().unwrap()),
        0xbeda107f
    );
    let blocks = u32::from_le_bytes(h[384..388].try_into().unwrap()) as u64;
    let bmap_at = 512u64;
    let data_at = (bmap_at + blocks * 4).div_ceil(512) * 512;
    h[76..80].copy_from_slice(&4u32.to_le_bytes());
    h[340..344].copy_from_slice(&(bmap_at as u32).to_le_bytes());
    h[344..348].copy_from_slice(&(data_at as u32).to_le_bytes());
    let parent_create: [u8; 16] = parent[392..408].try_into().unwrap();
    let parent_modify: [u8; 16] = parent[408..424].try_into().unwrap();
    h[392..408].copy_from_slice(&own);
    h[408..424].copy_from_slice(&[0x77; 16]);
    h[424..440].copy_from_slice(&parent_create);
    h[440..456].copy_from_slice(&parent_modify);
    let flat = apply(parent_flat, writes);
    let mut touched: std::collections::BTreeSet<u64> = Default::default();
    for (off, data) in writes {
        for b in off / MIB..(off + data.len() as u64).div_ceil(MIB) {
            touched.insert(b);
        }
    }
    let mut bmap = vec![0xffu8; (blocks * 4) as usize];
    let mut file = vec![0u8; data_at as usize];
    for (n, b) in touched.iter().enumerate() {
        bmap[*b as usize * 4..*b as usize * 4 + 4].copy_from_slice(&(n as u32).to_le_bytes());
        let start = (b * MIB) as usize;
        let mut block = flat[start..(start + MIB as usize).min(flat.len())].to_vec();
        block.resize(MIB as usize, 0);
        file.extend_from_slice(&block);
    }
    for b in discard {
        bmap[*b as usize * 4..*b as usize * 4 + 4].copy_from_slice(&0xfffffffeu32.to_le_bytes());
    }
    h[388..392].copy_from_slice(&(touched.len() as u32).to_le_bytes());
    file[..512].copy_from_slice(&h);
    file[bmap_at as usize..(bmap_at + blocks * 4) as usize].copy_from_slice(&bmap);
    file
}
