//! The VMDK descriptor: a text file (or text embedded in a sparse file)
//! naming the disk's type, its content IDs, its parent and its extents.
//!
//! Parsed the way qemu's block/vmdk.c parses it, quirks included, so that
//! layerscope sees the same disk qemu does: keys are found by substring
//! search (`vmdk_parse_description`, `vmdk_read_cid`), extent lines follow
//! qemu's `sscanf` pattern `%10s %lld %10s "%511[^\n\r"]" %lld`, lines
//! whose access is not `RW` or whose type is unknown are skipped, and a
//! malformed `FLAT`/`VMFS` line is an error. A pure function over bytes.

/// An extent line of the descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    /// `FLAT`, `VMFS`, `SPARSE`, `VMFSSPARSE` or `SESPARSE`.
    pub kind: String,
    /// Size in 512-byte sectors (positive).
    pub sectors: u64,
    /// The file name as written.
    pub file: String,
    /// For flat extents: where the extent starts in its file, in sectors.
    pub start_sector: u64,
    /// Byte offset of the line in the descriptor (for messages).
    pub at: u64,
}

/// What a descriptor says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub create_type: Option<String>,
    pub cid: Option<u32>,
    pub parent_cid: Option<u32>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
}

/// Why a descriptor cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Byte offset in the descriptor.
    pub at: u64,
    pub detail: String,
}

/// Most extents a descriptor may list. qemu has no limit; each extent is a
/// file to open, and a hostile descriptor could list a million.
pub const MAX_EXTENTS: usize = 1024;
/// qemu's longest backing file name.
const MAX_PARENT_NAME: usize = 4095;

/// The descriptor text: the bytes up to the first NUL (qemu treats the
/// buffer as a C string).
pub fn text(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or_default()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `vmdk_parse_description`: the first occurrence of `name`, then two
/// characters skipped (`="`), then everything up to the next `"`.
fn quoted_value(desc: &[u8], name: &str) -> Option<String> {
    let pos = find(desc, name.as_bytes())?;
    let start = pos.checked_add(name.len())?.checked_add(2)?;
    let rest = desc.get(start..)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(rest.get(..end)?).into_owned())
}

/// `vmdk_read_cid`: the first occurrence of `name`, one more character
/// skipped (`=`), then hex digits as `sscanf("%x")` reads them.
fn cid_value(desc: &[u8], name: &str) -> Option<u32> {
    let pos = find(desc, name.as_bytes())?;
    let start = pos.checked_add(name.len())?.checked_add(1)?;
    let rest = desc.get(start..)?;
    let rest: &[u8] = {
        let skip = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest.get(skip..).unwrap_or_default()
    };
    let rest = rest
        .strip_prefix(b"0x")
        .or_else(|| rest.strip_prefix(b"0X"))
        .unwrap_or(rest);
    let digits: Vec<u8> = rest
        .iter()
        .copied()
        .take_while(u8::is_ascii_hexdigit)
        .collect();
    if digits.is_empty() {
        return None;
    }
    // sscanf's %x keeps the low bits of a longer number.
    let mut v: u32 = 0;
    for d in digits {
        let n = char::from(d).to_digit(16)?;
        v = v.wrapping_shl(4) | n;
    }
    Some(v)
}

/// A cursor over one line, reading the way `sscanf` does.
struct Scan<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Scan<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos = self.pos.saturating_add(1);
        }
    }

    /// `%Ns`: up to `max` non-space characters, at least one.
    fn word(&mut self, max: usize) -> Option<String> {
        self.skip_ws();
        let start = self.pos;
        while self.pos.saturating_sub(start) < max
            && self
                .s
                .get(self.pos)
                .is_some_and(|b| !b.is_ascii_whitespace())
        {
            self.pos = self.pos.saturating_add(1);
        }
        (self.pos > start).then(|| {
            String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or_default()).into_owned()
        })
    }

    /// `%lld`: an optionally signed decimal number.
    fn number(&mut self) -> Option<i128> {
        self.skip_ws();
        let start = self.pos;
        if matches!(self.s.get(self.pos), Some(b'-' | b'+')) {
            self.pos = self.pos.saturating_add(1);
        }
        let digits = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos = self.pos.saturating_add(1);
        }
        if self.pos == digits {
            self.pos = start;
            return None;
        }
        let text = std::str::from_utf8(self.s.get(start..self.pos)?).ok()?;
        // Saturate like strtoll: a huge count is still a number.
        Some(text.parse::<i128>().unwrap_or(if text.starts_with('-') {
            i128::MIN
        } else {
            i128::MAX
        }))
    }

    /// ` "%511[^\n\r"]"`: a quoted name (the closing quote is required for
    /// the match to count, as sscanf's literal).
    fn quoted(&mut self) -> Option<(String, bool)> {
        self.skip_ws();
        if self.s.get(self.pos) != Some(&b'"') {
            return None;
        }
        let start = self.pos.saturating_add(1);
        let mut end = start;
        while end.saturating_sub(start) < 511
            && self
                .s
                .get(end)
                .is_some_and(|b| !matches!(b, b'\n' | b'\r' | b'"'))
        {
            end = end.saturating_add(1);
        }
        if end == start {
            return None;
        }
        let name = String::from_utf8_lossy(self.s.get(start..end)?).into_owned();
        let closed = self.s.get(end) == Some(&b'"');
        self.pos = end.saturating_add(1);
        Some((name, closed))
    }
}

/// Parses a descriptor's text (see [`text`]).
///
/// # Errors
/// A malformed extent line qemu refuses, a parent name qemu refuses, or
/// more than [`MAX_EXTENTS`] extents.
pub fn parse(desc: &[u8]) -> Result<Descriptor, Invalid> {
    let mut d = Descriptor {
        create_type: quoted_value(desc, "createType"),
        cid: cid_value(desc, "CID"),
        parent_cid: cid_value(desc, "parentCID"),
        ..Descriptor::default()
    };
    if let Some(pos) = find(desc, b"parentFileNameHint") {
        let start = pos
            .saturating_add("parentFileNameHint".len())
            .saturating_add(2);
        let rest = desc.get(start..).unwrap_or_default();
        let at = u64::try_from(pos).unwrap_or(u64::MAX);
        let end = rest
            .iter()
            .position(|&b| b == b'"')
            .ok_or_else(|| Invalid {
                at,
                detail: "parentFileNameHint has no closing quote".into(),
            })?;
        if end > MAX_PARENT_NAME {
            return Err(Invalid {
                at,
                detail: format!(
                    "parentFileNameHint is {end} bytes long, more than {MAX_PARENT_NAME}"
                ),
            });
        }
        let name = String::from_utf8_lossy(rest.get(..end).unwrap_or_default()).into_owned();
        d.parent_hint = Some(name);
    }
    let mut at = 0usize;
    for line in desc.split(|&b| b == b'\n') {
        let line_at = u64::try_from(at).unwrap_or(u64::MAX);
        at = at.saturating_add(line.len()).saturating_add(1);
        let mut scan = Scan { s: line, pos: 0 };
        let Some(access) = scan.word(10) else {
            continue;
        };
        let Some(sectors) = scan.number() else {
            continue;
        };
        let Some(kind) = scan.word(10) else { continue };
        let Some((file, closed)) = scan.quoted() else {
            continue;
        };
        let offset = if closed { scan.number() } else { None };
        let matches = if offset.is_some() { 5 } else { 4 };
        if access != "RW" {
            continue;
        }
        let invalid = || Invalid {
            at: line_at,
            detail: format!(
                "invalid extent line: {}",
                String::from_utf8_lossy(line).trim_end_matches('\r')
            ),
        };
        let start_sector = match kind.as_str() {
            "FLAT" => match offset {
                Some(o) if o >= 0 => u64::try_from(o).map_err(|_| invalid())?,
                _ => return Err(invalid()),
            },
            "VMFS" if matches == 4 => 0,
            "VMFS" => return Err(invalid()),
            _ if matches != 4 => return Err(invalid()),
            _ => 0,
        };
        let known = matches!(
            kind.as_str(),
            "FLAT" | "SPARSE" | "VMFS" | "VMFSSPARSE" | "SESPARSE"
        );
        if sectors <= 0 || !known {
            continue;
        }
        let sectors = u64::try_from(sectors).map_err(|_| invalid())?;
        if d.extents.len() >= MAX_EXTENTS {
            return Err(Invalid {
                at: line_at,
                detail: format!("more than {MAX_EXTENTS} extents"),
            });
        }
        d.extents.push(ExtentLine {
            kind,
            sectors,
            file,
            start_sector,
            at: line_at,
        });
    }
    Ok(d)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    const QEMU_FLAT: &str = "# Disk DescriptorFile\nversion=1\nCID=75a2f54a\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n\n# Extent description\nRW 4194304 FLAT \"d-f001.vmdk\" 0\nRW 2097152 FLAT \"d-f002.vmdk\" 0\n\nddb.adapterType = \"ide\"\n";

    #[test]
    fn a_qemu_descriptor() {
        let d = parse(QEMU_FLAT.as_bytes()).unwrap();
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentFlat"));
        assert_eq!(d.cid, Some(0x75a2_f54a));
        assert_eq!(d.parent_cid, Some(0xffff_ffff));
        assert_eq!(d.parent_hint, None);
        assert_eq!(d.extents.len(), 2);
        assert_eq!(d.extents[1].file, "d-f002.vmdk");
        assert_eq!(d.extents[1].sectors, 2_097_152);
        assert_eq!(&QEMU_FLAT[d.extents[0].at as usize..][..7], "RW 4194");
    }

    #[test]
    fn qemu_quirks() {
        // RDONLY and unknown types are skipped; VMFS takes no offset.
        let d = parse(b"RDONLY 10 SPARSE \"a\"\nRW 10 ZERO \"z\"\nRW 0 FLAT \"x\" 0\nRW 8 VMFS \"v\"\nRW 2 FLAT \"f\" 7\r\n").unwrap();
        let kinds: Vec<(&str, u64)> = d
            .extents
            .iter()
            .map(|e| (e.kind.as_str(), e.start_sector))
            .collect();
        assert_eq!(kinds, [("VMFS", 0), ("FLAT", 7)]);
        // A flat extent without its offset, or a sparse one with one.
        assert!(parse(b"RW 10 FLAT \"x\"\n").is_err());
        assert!(parse(b"RW 10 SPARSE \"x\" 5\n").is_err());
        assert!(parse(b"RW 10 VMFS \"x\" 5\n").is_err());
        assert!(parse(b"parentFileNameHint=\"never closed").is_err());
        let d = parse(b"parentFileNameHint=\"../base.vmdk\"\n").unwrap();
        assert_eq!(d.parent_hint.as_deref(), Some("../base.vmdk"));
    }

    #[test]
    fn too_many_extents() {
        let mut s = String::new();
        for i in 0..10_000 {
            s.push_str(&format!("RW 1 FLAT \"f{i}\" 0\n"));
        }
        let e = parse(s.as_bytes()).unwrap_err();
        assert!(e.detail.contains("more than 1024 extents"), "{e:?}");
    }

    #[test]
    fn text_stops_at_nul() {
        assert_eq!(text(b"ab\0cd"), b"ab");
    }
}
