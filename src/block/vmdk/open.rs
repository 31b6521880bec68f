//! Opening the sparse extents of a VMDK (hosted VMDK4 and VMDK3/COWD,
//! and seSparse) from their headers, the way qemu's block/vmdk.c does.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use super::*;

/// Opens a sparse extent (VMDK4 or VMDK3) from its first sector.
pub(super) fn open_sparse(
    path: &str,
    storage: Arc<dyn Storage>,
    file: usize,
    head: &[u8],
    in_descriptor: bool,
) -> Result<SparseExtent, BlockError> {
    let file_len = storage.len();
    let bad = |at: u64, detail: String| BlockError::corrupt(path, "VMDK sparse header", at, detail);
    match crate::bytes::be32(head, 0) {
        Some(VMDK4_MAGIC) => {
            let mut h = Vmdk4::decode(head).ok_or_else(|| bad(0, "header truncated".into()))?;
            if h.capacity == 0 && h.desc_offset != 0 && in_descriptor {
                return Err(bad(12, "an extent that is itself a descriptor".into()));
            }
            if h.gd_offset == GD_AT_END {
                let at = file_len.checked_sub(1536).ok_or_else(|| {
                    BlockError::corrupt(
                        path,
                        "VMDK stream footer",
                        0,
                        "the file is too short to hold a footer",
                    )
                })?;
                let mut footer = vec![0u8; 1536];
                read_exact(
                    storage.as_ref(),
                    path,
                    "VMDK stream footer",
                    at,
                    &mut footer,
                )?;
                h = header::decode_footer(&footer).map_err(|header::BadFooter::At(o, what)| {
                    BlockError::corrupt(path, "VMDK stream footer", at.saturating_add(o), what)
                })?;
            }
            if h.version > 3 {
                return Err(BlockError::unsupported(
                    path,
                    format!("VMDK version {}", h.version),
                ));
            }
            if h.num_gtes_per_gt > sparse::MAX_GTES {
                return Err(bad(
                    44,
                    format!(
                        "{} entries per grain table (L2 table size too big; at most 512)",
                        h.num_gtes_per_gt
                    ),
                ));
            }
            let per_gd = u64::from(h.num_gtes_per_gt).saturating_mul(h.granularity);
            if per_gd == 0 {
                return Err(bad(
                    20,
                    format!(
                    "grain size {} sectors, {} entries per grain table: L1 entry size is invalid",
                    h.granularity, h.num_gtes_per_gt
                ),
                ));
            }
            if file_len / 512 < h.grain_offset {
                return Err(bad(
                    64,
                    format!(
                        "file truncated: the first grain is at sector {}, the file has {} bytes",
                        h.grain_offset, file_len
                    ),
                ));
            }
            Ok(SparseExtent::new(
                path,
                storage,
                file,
                Params {
                    flavor: Flavor::Vmdk4 { version: h.version },
                    sectors: h.capacity,
                    grain_sectors: h.granularity,
                    gtes_per_gt: u64::from(h.num_gtes_per_gt),
                    gd_offset: h.gd_offset.saturating_mul(512),
                    gd_entries: h.capacity.div_ceil(per_gd),
                    overhead: h.grain_offset.saturating_mul(512),
                    compressed: h.compressed(),
                    has_marker: h.flags & header::FLAG_MARKER != 0,
                    zero_grain: h.flags & header::FLAG_ZERO_GRAIN != 0,
                },
            )?)
        }
        Some(VMDK3_MAGIC) => {
            let h = Vmdk3::decode(head).ok_or_else(|| bad(0, "header truncated".into()))?;
            SparseExtent::new(
                path,
                storage,
                file,
                Params {
                    flavor: Flavor::Vmdk3,
                    sectors: u64::from(h.disk_sectors),
                    grain_sectors: u64::from(h.granularity),
                    gtes_per_gt: 4096,
                    gd_offset: u64::from(h.l1dir_offset).saturating_mul(512),
                    gd_entries: u64::from(h.l1dir_size),
                    overhead: 512,
                    compressed: false,
                    has_marker: false,
                    zero_grain: false,
                },
            )
        }
        _ => Err(bad(
            0,
            "not a VMDK sparse extent (no KDMV or COWD magic)".into(),
        )),
    }
}

/// Opens an seSparse extent.
pub(super) fn open_sesparse(
    path: &str,
    storage: Arc<dyn Storage>,
    file: usize,
) -> Result<SparseExtent, BlockError> {
    let mut head = vec![0u8; 512];
    read_exact(storage.as_ref(), path, "seSparse header", 0, &mut head)?;
    let h = SeSparse::decode(&head)
        .map_err(|(at, what)| BlockError::corrupt(path, "seSparse header", at, what))?;
    let vat = h.volatile_header_offset.saturating_mul(512);
    let mut vol = vec![0u8; 512];
    read_exact(
        storage.as_ref(),
        path,
        "seSparse volatile header",
        vat,
        &mut vol,
    )?;
    SeSparse::check_volatile(&vol).map_err(|(at, what)| {
        BlockError::corrupt(
            path,
            "seSparse volatile header",
            vat.saturating_add(at),
            what,
        )
    })?;
    SparseExtent::new(
        path,
        storage,
        file,
        Params {
            flavor: Flavor::SeSparse {
                tables_offset: h.grain_tables_offset,
                grains_offset: h.grains_offset,
            },
            sectors: h.capacity,
            grain_sectors: h.grain_size,
            gtes_per_gt: h.grain_table_size.saturating_mul(512) / 8,
            gd_offset: h.grain_dir_offset.saturating_mul(512),
            gd_entries: h.grain_dir_size.saturating_mul(512) / 8,
            overhead: 0,
            compressed: false,
            has_marker: false,
            zero_grain: false,
        },
    )
}
