//! The hashes of htree directories (the kernel's `ext4fs_dirhash`):
//! legacy, half-MD4 and TEA, each in the signed-char form older kernels
//! on x86 used and the unsigned form the superblock's `s_flags` selects
//! (`EXT2_FLAGS_UNSIGNED_HASH`). A name's hash says which leaf block of
//! the index holds it, so a lookup reads a few blocks instead of the
//! whole directory.
//!
//! Pure functions over the name bytes; `Wrapping` arithmetic is the
//! definition here (the hashes are computed modulo 2^32).
use std::num::Wrapping as W;

/// `dx_root_info.hash_version` values.
pub const LEGACY: u8 = 0;
pub const HALF_MD4: u8 = 1;
pub const TEA: u8 = 2;
/// Added to the three above when the superblock asks for unsigned hashes.
pub const UNSIGNED: u8 = 3;
/// The hash the kernel never returns (`EXT4_HTREE_EOF_32BIT << 1`).
const EOF_32: u32 = 0x7fff_ffff;

/// A name's character as the hash reads it: signed (sign-extended) or
/// unsigned.
fn ch(b: u8, signed: bool) -> u32 {
    if signed {
        // Sign extension of a C `signed char` to 32 bits.
        u32::from_ne_bytes(i32::from(i8::from_ne_bytes([b])).to_ne_bytes())
    } else {
        u32::from(b)
    }
}

/// The legacy hash (`dx_hack_hash`).
fn legacy(name: &[u8], signed: bool) -> u32 {
    let (mut h0, mut h1) = (W(0x12a3_fe2d_u32), W(0x37ab_e8f9_u32));
    for &b in name {
        let mut h = h1 + (h0 ^ (W(ch(b, signed)) * W(7_152_373)));
        if h.0 & 0x8000_0000 != 0 {
            h -= W(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    (h0 << 1).0
}

/// `str2hashbuf`: up to `out.len() * 4` bytes of `msg` packed into words,
/// padded with the length.
fn str2hashbuf(msg: &[u8], out: &mut [u32], signed: bool) {
    // The kernel's `len` is the rest of the whole name, not this chunk's.
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let take = msg.len().min(out.len().saturating_mul(4));
    let mut val = pad;
    let mut words = out.iter_mut();
    for (i, &b) in msg.iter().take(take).enumerate() {
        if i % 4 == 0 {
            val = pad;
        }
        val = (W(ch(b, signed)) + (W(val) << 8)).0;
        if i % 4 == 3 {
            if let Some(w) = words.next() {
                *w = val;
            }
            val = pad;
        }
    }
    let mut first = true;
    for w in words {
        // The partial word, then padding (a name that filled its last word
        // exactly adds the padding word first).
        *w = if first && take % 4 != 0 { val } else { pad };
        first = false;
    }
}

fn tea_transform(buf: &mut [u32; 4], input: &[u32; 4]) {
    let (mut b0, mut b1) = (W(buf[0]), W(buf[1]));
    let [a, b, c, d] = input.map(W);
    let mut sum = W(0u32);
    for _ in 0..16 {
        sum += W(0x9e37_79b9);
        b0 += ((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >> 5) + b);
        b1 += ((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >> 5) + d);
    }
    buf[0] = (W(buf[0]) + b0).0;
    buf[1] = (W(buf[1]) + b1).0;
}

fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    let f = |x: W<u32>, y: W<u32>, z: W<u32>| z ^ (x & (y ^ z));
    let g = |x: W<u32>, y: W<u32>, z: W<u32>| (x & y) + ((x ^ y) & z);
    let h = |x: W<u32>, y: W<u32>, z: W<u32>| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = buf.map(W);
    let x = x.map(W);
    let round = |f: &dyn Fn(W<u32>, W<u32>, W<u32>) -> W<u32>,
                 a: &mut W<u32>,
                 b: W<u32>,
                 c: W<u32>,
                 d: W<u32>,
                 k: W<u32>,
                 s: u32| {
        *a += f(b, c, d) + k;
        *a = W(a.0.rotate_left(s));
    };
    let (k2, k3) = (W(0o13_240_474_631_u32), W(0o15_666_365_641_u32));
    let i = |n: usize| x.get(n).copied().unwrap_or(W(0));
    // Round 1.
    for n in [0, 4] {
        round(&f, &mut a, b, c, d, i(n), 3);
        round(&f, &mut d, a, b, c, i(n.saturating_add(1)), 7);
        round(&f, &mut c, d, a, b, i(n.saturating_add(2)), 11);
        round(&f, &mut b, c, d, a, i(n.saturating_add(3)), 19);
    }
    // Round 2.
    for n in [1, 0] {
        round(&g, &mut a, b, c, d, i(n) + k2, 3);
        round(&g, &mut d, a, b, c, i(n.saturating_add(2)) + k2, 5);
        round(&g, &mut c, d, a, b, i(n.saturating_add(4)) + k2, 9);
        round(&g, &mut b, c, d, a, i(n.saturating_add(6)) + k2, 13);
    }
    // Round 3.
    for (p, q, r, s) in [(3, 7, 2, 6), (1, 5, 0, 4)] {
        round(&h, &mut a, b, c, d, i(p) + k3, 3);
        round(&h, &mut d, a, b, c, i(q) + k3, 9);
        round(&h, &mut c, d, a, b, i(r) + k3, 11);
        round(&h, &mut b, c, d, a, i(s) + k3, 15);
    }
    for (o, v) in buf.iter_mut().zip([a, b, c, d]) {
        *o = (W(*o) + v).0;
    }
}

/// The (major) hash of `name` for `version` (0 to 5) and the
/// superblock's `s_hash_seed` (as four little-endian words); `None` for
/// versions computed otherwise (siphash for casefolded names), which a
/// lookup must not guess.
pub fn hash(name: &[u8], version: u8, seed: [u32; 4]) -> Option<u32> {
    let mut buf = if seed.iter().any(|&w| w != 0) {
        seed
    } else {
        [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
    };
    let signed = version < UNSIGNED;
    let h = match version % UNSIGNED {
        _ if version > TEA + UNSIGNED => return None,
        LEGACY => legacy(name, signed),
        HALF_MD4 => {
            let mut input = [0u32; 8];
            for chunk_start in (0..name.len()).step_by(32) {
                str2hashbuf(name.get(chunk_start..)?, &mut input, signed);
                half_md4_transform(&mut buf, &input);
            }
            buf[1]
        }
        _ => {
            let mut input = [0u32; 4];
            for chunk_start in (0..name.len()).step_by(16) {
                str2hashbuf(name.get(chunk_start..)?, &mut input, signed);
                tea_transform(&mut buf, &input);
            }
            buf[0]
        }
    };
    let h = h & !1;
    Some(if h == EOF_32 << 1 {
        (EOF_32 - 1) << 1
    } else {
        h
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_words_follow_the_name() {
        let mut out = [0u32; 4];
        str2hashbuf(b"abcde", &mut out, false);
        // len 5: pad = 0x05050505.
        assert_eq!(out[0], 0x6162_6364);
        assert_eq!(out[1], 0x0505_0565);
        assert_eq!(out[2..], [0x0505_0505, 0x0505_0505]);
        let mut out = [0u32; 2];
        str2hashbuf(b"abcd", &mut out, false);
        assert_eq!(out, [0x6162_6364, 0x0404_0404]);
    }

    #[test]
    fn signed_and_unsigned_differ_only_past_ascii() {
        let seed = [1, 2, 3, 4];
        for v in [LEGACY, HALF_MD4, TEA] {
            assert_eq!(hash(b"plain", v, seed), hash(b"plain", v + UNSIGNED, seed));
            assert_ne!(
                hash("ünï".as_bytes(), v, seed),
                hash("ünï".as_bytes(), v + UNSIGNED, seed)
            );
        }
        assert_eq!(hash(b"x", 6, seed), None);
    }
}
