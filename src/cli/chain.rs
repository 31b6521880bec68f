//! `layerscope chain`: every layer of the chain, top first.
use std::io::Write;

use serde::Serialize;

use crate::block::chain::{Chain, Layer};
use crate::escape::printable;
use crate::units::human;

/// One layer as `chain --json` prints it. Key names follow
/// `qemu-img info --output=json` where qemu has the same fact.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct LayerJson {
    index: usize,
    depth: usize,
    filename: String,
    format: &'static str,
    format_probed: bool,
    virtual_size: u64,
    file_size: u64,
    /// Served over NBD: there is no local file to give a size of.
    #[serde(skip)]
    over_nbd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    actual_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qcow2_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compat: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extended_l2: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refcount_bits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lazy_refcounts: Option<bool>,
    dirty_flag: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    corrupt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocated_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    full_backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backing_filename_format: Option<String>,
}

fn describe(chain: &Chain, layer: &Layer) -> anyhow::Result<LayerJson> {
    let q = layer.qcow2.as_deref();
    let h = q.map(|q| q.header());
    let allocated = match q {
        Some(q) => Some(q.held_bytes()?),
        None => None,
    };
    Ok(LayerJson {
        index: layer.index,
        depth: chain.depth_of(layer.index),
        filename: layer.path.clone(),
        format: layer.format.name(),
        format_probed: layer.format_probed,
        virtual_size: layer.source.len(),
        file_size: layer.storage.as_ref().map_or(0, |s| s.len()),
        over_nbd: layer.storage.is_none() && layer.nbd.is_some(),
        actual_size: layer.storage.as_ref().and_then(|s| s.allocated_size()),
        cluster_size: h.map(|h| h.cluster_size()),
        qcow2_version: h.map(|h| h.version),
        compat: h.map(|h| if h.version == 2 { "0.10" } else { "1.1" }),
        compression_type: h.map(|h| h.compression.name()),
        extended_l2: h.map(|h| h.extended_l2()),
        refcount_bits: h.map(|h| h.refcount_bits()),
        lazy_refcounts: h.map(|h| {
            h.compatible_features & crate::block::qcow2::header::COMPAT_LAZY_REFCOUNTS != 0
        }),
        dirty_flag: h.is_some_and(|h| h.dirty()),
        corrupt: h.map(|h| h.corrupt()),
        snapshots: h.map(|h| h.nb_snapshots),
        allocated_bytes: allocated,
        backing_filename: layer.backing_name.clone(),
        full_backing_filename: layer.backing_resolved.clone(),
        backing_filename_format: layer.backing_format.clone(),
    })
}

/// Prints the chain.
///
/// # Errors
/// Metadata errors while counting allocation; write errors.
pub fn run(chain: &Chain, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let layers: Vec<LayerJson> = chain
        .layers
        .iter()
        .rev()
        .map(|l| describe(chain, l))
        .collect::<anyhow::Result<_>>()?;
    if json {
        crate::escape::json::to_writer_pretty(&mut *out, &layers)?;
        writeln!(out)?;
        return Ok(());
    }
    let top = layers.first().map_or(0, |l| l.virtual_size);
    writeln!(
        out,
        "{} layer{}, virtual size {} ({top} bytes)",
        layers.len(),
        if layers.len() == 1 { "" } else { "s" },
        human(top)
    )?;
    for l in &layers {
        let role = match (l.depth, l.index) {
            (0, 0) => " (top, base)",
            (0, _) => " (top)",
            (_, 0) => " (base)",
            _ => "",
        };
        writeln!(out, "\nlayer {}{role}: {}", l.index, printable(&l.filename))?;
        let probed = if l.format_probed { " (detected)" } else { "" };
        match (l.qcow2_version, l.cluster_size) {
            (Some(v), Some(c)) => {
                writeln!(
                out,
                "  format:        qcow2 v{v} (compat {}){probed}, {} clusters, {} compression{}",
                l.compat.unwrap_or("?"),
                human(c),
                l.compression_type.unwrap_or("?"),
                if l.extended_l2 == Some(true) { ", extended L2" } else { "" }
            )?
            }
            _ => writeln!(out, "  format:        {}{probed}", l.format)?,
        }
        writeln!(
            out,
            "  virtual size:  {} ({} bytes)",
            human(l.virtual_size),
            l.virtual_size
        )?;
        if let Some(a) = l.allocated_bytes {
            writeln!(out, "  holds:         {} of the disk ({a} bytes)", human(a))?;
        }
        let on_disk = l
            .actual_size
            .map(|a| format!(", {} on disk", human(a)))
            .unwrap_or_default();
        if l.over_nbd {
            writeln!(out, "  file:          none here (served over NBD)")?;
        } else {
            writeln!(out, "  file size:     {}{on_disk}", human(l.file_size))?;
        }
        let mut flags = Vec::new();
        if l.dirty_flag {
            flags.push("dirty (not closed cleanly)");
        }
        if l.corrupt == Some(true) {
            flags.push("marked corrupt by qemu");
        }
        if l.snapshots.unwrap_or(0) > 0 {
            flags.push("has internal snapshots");
        }
        if !flags.is_empty() {
            writeln!(out, "  flags:         {}", flags.join(", "))?;
        }
        if let Some(b) = &l.backing_filename {
            let fmt = l
                .backing_filename_format
                .as_deref()
                .map(|f| format!(" (format {})", printable(f)))
                .unwrap_or_else(|| " (format not recorded: detected)".into());
            writeln!(out, "  backing file:  {}{fmt}", printable(b))?;
            if let Some(r) = &l.full_backing_filename {
                if r != b {
                    writeln!(out, "  resolved to:   {}", printable(r))?;
                }
            }
        }
    }
    Ok(())
}
