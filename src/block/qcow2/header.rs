//! The qcow2 header and its extensions, decoded from the first bytes of the
//! file. A pure function over bytes: nothing here does I/O.
//!
//! Layout from qemu's `docs/interop/qcow2.txt`; every field is big-endian.
use crate::block::BlockError;
use crate::bytes::{be32, be64, u64_of, us};
use crate::layout::{decode_table, value_of, Endian, Field, FieldValue};

/// `QFI\xfb`.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Size of a version 2 header; version 3 headers say their own length.
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest and largest cluster_bits qemu accepts.
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's limit on the L1 table (QCOW_MAX_L1_SIZE), in bytes.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Backing file names longer than this are refused by qemu.
pub const MAX_BACKING_NAME: u32 = 1023;

/// Bytes from the start of the file within which [`backing_hint`] looks
/// for the name: what the format probe has already fetched of a remote
/// file (its first chunk), so the hint costs no round trip.
const HINT_WITHIN: u64 = 4096;

/// The backing file name a qcow2 header names, read as it is (magic,
/// then offset and length, the name within the file's first
/// [`HINT_WITHIN`] bytes), for opening the backing file ahead. Nothing
/// is checked beyond that: [`Header::decode`] decides what the layer's
/// parent is.
pub fn backing_hint(storage: &dyn crate::block::storage::Storage) -> Option<String> {
    let mut fixed = [0u8; 20];
    storage.read_exact_at(0, &mut fixed).ok()?;
    if fixed.get(0..4) != Some(&MAGIC[..]) {
        return None;
    }
    let at = crate::bytes::be64(&fixed, 8)?;
    let len = crate::bytes::be32(&fixed, 16)?;
    let end = at.checked_add(u64::from(len))?;
    if len == 0 || len > MAX_BACKING_NAME || end > HINT_WITHIN.min(storage.len()) {
        return None;
    }
    let mut name = vec![0u8; crate::bytes::us(u64::from(len))];
    storage.read_exact_at(at, &mut name).ok()?;
    String::from_utf8(name).ok()
}

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/// Compatible feature bit: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// The header fields, in file order. Drives decoding and display.
pub const HEADER: &[Field] = &[
    Field::new("magic", 0, 4, "QFI\\xfb"),
    Field::new("version", 4, 4, "2 or 3"),
    Field::new(
        "backing_file_offset",
        8,
        8,
        "where the backing file name is, 0 if none",
    ),
    Field::new(
        "backing_file_size",
        16,
        4,
        "length of the backing file name",
    ),
    Field::new("cluster_bits", 20, 4, "log2 of the cluster size"),
    Field::new("size", 24, 8, "virtual disk size in bytes"),
    Field::new("crypt_method", 32, 4, "0 none, 1 AES, 2 LUKS"),
    Field::new("l1_size", 36, 4, "entries in the active L1 table"),
    Field::new(
        "l1_table_offset",
        40,
        8,
        "file offset of the active L1 table",
    ),
    Field::new(
        "refcount_table_offset",
        48,
        8,
        "file offset of the refcount table",
    ),
    Field::new(
        "refcount_table_clusters",
        56,
        4,
        "clusters of the refcount table",
    ),
    Field::new("nb_snapshots", 60, 4, "number of internal snapshots"),
    Field::new(
        "snapshots_offset",
        64,
        8,
        "file offset of the snapshot table",
    ),
    Field::new(
        "incompatible_features",
        72,
        8,
        "v3: features a reader must know",
    ),
    Field::new(
        "compatible_features",
        80,
        8,
        "v3: features a reader may ignore",
    ),
    Field::new(
        "autoclear_features",
        88,
        8,
        "v3: features cleared by old writers",
    ),
    Field::new(
        "refcount_order",
        96,
        4,
        "v3: log2 of the refcount width in bits",
    ),
    Field::new(
        "header_length",
        100,
        4,
        "v3: length of the header structure",
    ),
    Field::new("compression_type", 104, 1, "v3: 0 zlib, 1 zstd"),
];

/// How compressed clusters are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

impl Compression {
    /// The name qemu uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// A decoded, validated qcow2 header.
#[derive(Clone, Debug)]
pub struct Header {
    /// Every field with its offset and raw value.
    pub fields: Vec<FieldValue>,
    pub version: u32,
    pub cluster_bits: u32,
    /// The virtual disk size as qemu uses it: the header's `size` rounded
    /// down to whole 512-byte sectors (qemu keeps `total_sectors`). The raw
    /// value stays in `fields`, and checks the L1 table as qemu does.
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    /// File offset of the internal snapshot table.
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    /// The backing file name as written in the image.
    pub backing_file: Option<String>,
    /// The backing format from the header extension.
    pub backing_format: Option<String>,
    /// Names from the feature name table: (type 0/1/2, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
    pub has_bitmaps: bool,
    /// The bitmaps extension: (number of bitmaps, directory size,
    /// directory offset), as written.
    pub bitmaps_extension: Option<(u32, u64, u64)>,
    /// Autoclear bit 0: the bitmaps extension is consistent (a program
    /// that does not know bitmaps cleared it when it wrote the image).
    pub bitmaps_consistent: bool,
    /// The external data file's name as written (guest data lives there,
    /// metadata here).
    pub data_file: Option<String>,
    /// Autoclear bit 1: the data file is a raw image of the disk by itself.
    pub data_file_raw: bool,
    /// 0 none, 1 qemu's legacy AES, 2 LUKS.
    pub crypt_method: u32,
    /// The LUKS header's place in the file (offset, length), from the
    /// crypto header extension.
    pub luks_header: Option<(u64, u64)>,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// True when L2 entries carry a subcluster bitmap (128-bit entries).
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }

    /// The image was not closed cleanly (refcounts may be stale; the data
    /// mapping is still valid).
    pub fn dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    /// qemu found corruption and marked the image.
    pub fn corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }

    /// log2 of the entries in one L2 table (8-byte entries, 16-byte with
    /// extended L2). Never wraps: `decode` checked `cluster_bits` (at least
    /// 9, and 14 with extended L2).
    pub fn l2_bits(&self) -> u32 {
        self.cluster_bits
            .saturating_sub(if self.extended_l2() { 4 } else { 3 })
    }

    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1u32 << self.refcount_order.min(6)
    }

    /// How many bytes from the start of the file [`Header::decode`] wants:
    /// the first cluster plus room for a backing file name that starts near
    /// its end. Known from the fixed part alone.
    pub fn wanted_len(fixed: &[u8]) -> u64 {
        let bits = Field::new("", 20, 4, "")
            .read(fixed, Endian::Big)
            .unwrap_or(16)
            .clamp(u64::from(MIN_CLUSTER_BITS), u64::from(MAX_CLUSTER_BITS));
        (1u64 << bits).saturating_add(u64::from(MAX_BACKING_NAME) + 1)
    }

    /// Decodes and validates the header. `bytes` are the first bytes of the
    /// file (see [`Header::wanted_len`]), `file_len` its full length, and
    /// `path` names the file in errors.
    ///
    /// # Errors
    /// `Corrupt` for impossible values (naming the field and its offset),
    /// `Unsupported` for encryption, external data files, unknown
    /// incompatible features and versions other than 2 and 3.
    pub fn decode(path: &str, bytes: &[u8], file_len: u64) -> Result<Header, BlockError> {
        let bad = |field: &str, detail: String| {
            let offset = HEADER
                .iter()
                .find(|f| f.name == field)
                .map_or(0, |f| u64_of(f.offset));
            BlockError::corrupt(path, "qcow2 header", offset, format!("{field}: {detail}"))
        };
        if bytes.get(0..4) != Some(&MAGIC[..]) {
            let found: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(BlockError::corrupt(
                path,
                "qcow2 header",
                0,
                format!(
                    "magic: not a qcow2 image (found {}, expected 51 46 49 fb)",
                    found.join(" ")
                ),
            ));
        }
        if u64_of(bytes.len()) < u64::from(V2_HEADER_LEN) {
            return Err(BlockError::corrupt(
                path,
                "qcow2 header",
                0,
                format!(
                    "truncated: the file has {} bytes, a qcow2 header needs {V2_HEADER_LEN}",
                    bytes.len()
                ),
            ));
        }
        let all = decode_table(HEADER, bytes, Endian::Big, 0);
        let get = |name: &str| value_of(&all, name).unwrap_or(0);
        // Four-byte fields: u32::MAX never happens, and fails every check.
        let get32 = |name: &str| u32::try_from(get(name)).unwrap_or(u32::MAX);
        let version = get32("version");
        if version != 2 && version != 3 {
            return Err(BlockError::unsupported(
                path,
                format!("qcow2 version {version} (only 2 and 3 exist)"),
            ));
        }
        let header_length = if version == 2 {
            V2_HEADER_LEN
        } else {
            get32("header_length")
        };
        let cluster_bits = get32("cluster_bits");
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(bad(
                "cluster_bits",
                format!("{cluster_bits}, expected {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        if version == 3 && bytes.len() < 104 {
            return Err(BlockError::corrupt(
                path,
                "qcow2 header",
                0,
                format!(
                    "truncated: the file has {} bytes, a version 3 header needs at least 104",
                    bytes.len()
                ),
            ));
        }
        if version == 3 {
            if header_length < 104 || header_length & 7 != 0 {
                return Err(bad(
                    "header_length",
                    format!("{header_length}, expected a multiple of 8, at least 104"),
                ));
            }
            if u64::from(header_length) > cluster_size {
                return Err(bad(
                    "header_length",
                    format!("{header_length} is larger than the cluster size {cluster_size}"),
                ));
            }
            if u64_of(bytes.len()) < u64::from(header_length) {
                return Err(bad(
                    "header_length",
                    format!(
                        "{header_length}, but the file has only {} bytes",
                        bytes.len()
                    ),
                ));
            }
        }
        // Fields past header_length do not exist in this image.
        let fields: Vec<FieldValue> = all
            .into_iter()
            .filter(|f| {
                f.offset
                    .checked_add(u64_of(f.size))
                    .is_some_and(|end| end <= u64::from(header_length))
            })
            .collect();
        let get = |name: &str| value_of(&fields, name);
        let get32 = |name: &str| get(name).map(|v| u32::try_from(v).unwrap_or(u32::MAX));

        let crypt_method = get32("crypt_method").unwrap_or(0);
        if crypt_method > 2 {
            return Err(bad(
                "crypt_method",
                format!("unknown method {crypt_method}"),
            ));
        }

        let incompatible_features = get("incompatible_features").unwrap_or(0);
        let compatible_features = get("compatible_features").unwrap_or(0);
        let refcount_order = get32("refcount_order").unwrap_or(4);
        if refcount_order > 6 {
            return Err(bad(
                "refcount_order",
                format!("{refcount_order}, expected 0..=6"),
            ));
        }
        let compression = match get("compression_type").unwrap_or(0) {
            0 => Compression::Zlib,
            1 => Compression::Zstd,
            n => {
                return Err(BlockError::unsupported(
                    path,
                    format!("compression type {n} (only 0 zlib and 1 zstd exist)"),
                ))
            }
        };
        if compression != Compression::Zlib && incompatible_features & INCOMPAT_COMPRESSION == 0 {
            return Err(bad(
                "compression_type",
                "non-zlib compression without the compression-type feature bit".into(),
            ));
        }

        // Extensions follow the header, up to the backing file name or the
        // end of the first cluster.
        let backing_file_offset = get("backing_file_offset").unwrap_or(0);
        let backing_file_size = get32("backing_file_size").unwrap_or(0);
        let ext_end = if backing_file_offset != 0 {
            backing_file_offset.min(cluster_size)
        } else {
            cluster_size
        }
        .min(u64_of(bytes.len()));
        let exts = decode_extensions(path, bytes, u64::from(header_length), ext_end)?;

        let unknown = incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|b| unknown & (1u64 << b) != 0)
                .map(|b| {
                    exts.feature_names
                        .iter()
                        .find(|(t, bit, _)| *t == 0 && *bit == b)
                        .map_or_else(|| format!("bit {b}"), |(_, _, n)| format!("bit {b} ({n})"))
                })
                .collect();
            return Err(BlockError::unsupported(
                path,
                format!("unknown incompatible feature {}", names.join(", ")),
            ));
        }
        // An external data file: the bit and the name go together (qemu
        // refuses either alone).
        let data_file = match (
            incompatible_features & INCOMPAT_DATA_FILE != 0,
            &exts.data_file,
        ) {
            (true, Some(name)) if !name.is_empty() => Some(name.clone()),
            (false, None) => None,
            (true, _) => {
                return Err(bad(
                    "incompatible_features",
                    "the external data file bit is set, but no data file is named".into(),
                ))
            }
            (false, Some(name)) => {
                return Err(bad(
                    "incompatible_features",
                    format!(
                        "a data file {name:?} is named, but the external data file bit is clear"
                    ),
                ))
            }
        };
        if exts.crypto.is_some() && crypt_method != 2 {
            return Err(bad(
                "crypt_method",
                format!("{crypt_method}, but a LUKS crypto header extension is present"),
            ));
        }
        let extended = incompatible_features & INCOMPAT_EXTL2 != 0;
        if extended && cluster_bits < 14 {
            return Err(bad(
                "cluster_bits",
                format!("{cluster_bits}: extended L2 entries need clusters of at least 16 KiB"),
            ));
        }

        // Virtual size and L1 table.
        let size = get("size").unwrap_or(0);
        if i64::try_from(size).is_err() {
            return Err(bad("size", format!("{size} is larger than 2^63-1")));
        }
        // cluster_bits is 9..=21 (14..=21 with extended L2), checked above.
        let l2_bits = cluster_bits.saturating_sub(if extended { 4 } else { 3 });
        let per_l1 = 1u64 << cluster_bits.saturating_add(l2_bits);
        let l1_needed = size.div_ceil(per_l1);
        let l1_size = get32("l1_size").unwrap_or(0);
        let l1_bytes = u64::from(l1_size).saturating_mul(8);
        if l1_bytes > MAX_L1_BYTES {
            return Err(bad(
                "l1_size",
                format!(
                    "{l1_size} entries is more than qemu's limit of {} entries",
                    MAX_L1_BYTES / 8
                ),
            ));
        }
        if u64::from(l1_size) < l1_needed {
            return Err(bad(
                "l1_size",
                format!("{l1_size} entries cannot map a {size}-byte disk (needs {l1_needed})"),
            ));
        }
        let l1_table_offset = get("l1_table_offset").unwrap_or(0);
        if l1_size > 0 {
            if l1_table_offset & super::low_mask(cluster_bits) != 0 {
                return Err(bad(
                    "l1_table_offset",
                    format!("{l1_table_offset:#x} is not aligned to the cluster size"),
                ));
            }
            if l1_table_offset
                .checked_add(l1_bytes)
                .is_none_or(|end| end > file_len)
            {
                return Err(bad(
                    "l1_table_offset",
                    format!(
                        "L1 table at {l1_table_offset:#x} ({l1_bytes} bytes) passes the end of the file ({file_len} bytes)"
                    ),
                ));
            }
        }

        let backing_file = if backing_file_offset != 0 {
            if backing_file_size > MAX_BACKING_NAME {
                return Err(bad(
                    "backing_file_size",
                    format!("{backing_file_size}, longer than {MAX_BACKING_NAME}"),
                ));
            }
            if backing_file_offset > cluster_size {
                return Err(bad(
                    "backing_file_offset",
                    format!("{backing_file_offset:#x} is outside the first cluster"),
                ));
            }
            let start = us(backing_file_offset);
            let name =
                crate::bytes::slice(bytes, start, us(backing_file_size)).ok_or_else(|| {
                    bad(
                        "backing_file_offset",
                        format!(
                            "name at {start:#x}+{backing_file_size} passes the end of the file"
                        ),
                    )
                })?;
            Some(String::from_utf8_lossy(name).into_owned())
        } else {
            None
        };

        let nb_snapshots = get32("nb_snapshots").unwrap_or(0);
        let snapshots_offset = get("snapshots_offset").unwrap_or(0);
        let autoclear = get("autoclear_features").unwrap_or(0);
        let bitmaps_consistent = autoclear & 1 != 0;
        let refcount_table_offset = get("refcount_table_offset").unwrap_or(0);
        let refcount_table_clusters = get32("refcount_table_clusters").unwrap_or(0);
        Ok(Header {
            fields,
            version,
            cluster_bits,
            size: size & !511,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            snapshots_offset,
            incompatible_features,
            compatible_features,
            refcount_order,
            header_length,
            compression,
            backing_file: backing_file.filter(|n| !n.is_empty()),
            backing_format: exts.backing_format,
            feature_names: exts.feature_names,
            has_bitmaps: exts.bitmaps,
            bitmaps_extension: exts.bitmaps_extension,
            bitmaps_consistent,
            data_file_raw: data_file.is_some() && autoclear & 2 != 0,
            data_file,
            crypt_method,
            luks_header: exts.crypto,
        })
    }
}

#[derive(Default)]
struct Extensions {
    backing_format: Option<String>,
    feature_names: Vec<(u8, u8, String)>,
    data_file: Option<String>,
    crypto: Option<(u64, u64)>,
    bitmaps: bool,
    bitmaps_extension: Option<(u32, u64, u64)>,
}

fn decode_extensions(
    path: &str,
    bytes: &[u8],
    start: u64,
    end: u64,
) -> Result<Extensions, BlockError> {
    let mut exts = Extensions::default();
    let mut pos = start;
    // Each extension takes at least 8 bytes, so this loop ends.
    while pos.saturating_add(8) <= end {
        let p = us(pos);
        let (Some(kind), Some(len)) = (be32(bytes, p), be32(bytes, p.saturating_add(4))) else {
            // `end` is at most the length of `bytes`.
            break;
        };
        let len = u64::from(len);
        if kind == EXT_END {
            break;
        }
        let past_end = || {
            BlockError::corrupt(
                path,
                "qcow2 header extension",
                pos,
                format!("extension {kind:#010x} of {len} bytes passes the end of the header area ({end:#x})"),
            )
        };
        // pos + 8 <= end: the loop's condition.
        let data_start = pos.saturating_add(8);
        let data_end = data_start
            .checked_add(len)
            .filter(|&e| e <= end)
            .ok_or_else(past_end)?;
        let data = bytes
            .get(us(data_start)..us(data_end))
            .ok_or_else(past_end)?;
        let text = || {
            String::from_utf8_lossy(data)
                .trim_end_matches('\0')
                .to_owned()
        };
        match kind {
            EXT_BACKING_FORMAT => exts.backing_format = Some(text()),
            EXT_DATA_FILE => exts.data_file = Some(text()),
            EXT_CRYPTO => {
                exts.crypto = Some((be64(data, 0).unwrap_or(0), be64(data, 8).unwrap_or(0)));
            }
            EXT_BITMAPS => {
                exts.bitmaps = true;
                // qcow2.txt: nb_bitmaps, reserved, directory size, offset.
                if let (Some(nb), Some(size), Some(offset)) =
                    (be32(data, 0), be64(data, 8), be64(data, 16))
                {
                    exts.bitmaps_extension = Some((nb, size, offset));
                }
            }
            EXT_FEATURE_TABLE => {
                for entry in data.chunks_exact(48) {
                    if let [kind, bit, name @ ..] = entry {
                        let name = String::from_utf8_lossy(name);
                        exts.feature_names.push((
                            *kind,
                            *bit,
                            name.trim_end_matches('\0').to_owned(),
                        ));
                    }
                }
            }
            _ => {}
        }
        // data_end <= end, far below u64::MAX: never saturates.
        pos = data_end.checked_next_multiple_of(8).unwrap_or(u64::MAX);
    }
    Ok(exts)
}
