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
    /// The number of internal snapshots (qemu's `snapshots` is their
    /// list, printed only when there are some).
    #[serde(rename = "snapshot-count", skip_serializing_if = "Option::is_none")]
    snapshots: Option<u32>,
    /// The internal snapshots, as qemu-img info lists them.
    #[serde(rename = "snapshots", skip_serializing_if = "Vec::is_empty")]
    snapshot_list: Vec<crate::block::qcow2::snapshot::SnapshotJson>,
    /// The internal snapshot this layer is read as (`--snapshot`).
    #[serde(skip_serializing_if = "Option::is_none")]
    read_as_snapshot: Option<serde_json::Value>,
    /// What could not be read about the layer (the rest still is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocated_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    full_backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backing_filename_format: Option<String>,
    /// `qemu-img info`'s format-specific data (qcow2, VMDK, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    format_specific: Option<serde_json::Value>,
    /// `qemu-img info`'s child nodes: the protocol layer (`file`) under
    /// a qcow2 or raw layer read from a local file.
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<Vec<serde_json::Value>>,
    /// For formats other than qcow2: what the reader says, one line.
    #[serde(skip)]
    summary: Option<String>,
    /// For formats other than qcow2: more facts, as (label, value).
    #[serde(skip)]
    facts: Vec<(String, String)>,
}

fn describe(chain: &Chain, layer: &Layer) -> anyhow::Result<LayerJson> {
    let q = layer.qcow2.as_deref();
    let h = q.map(|q| q.header());
    let info = layer.info.as_deref();
    let allocated = match (q, info) {
        (Some(q), _) => Some(q.held_bytes()?),
        (None, Some(i)) => Some(i.held_bytes()?),
        (None, None) => None,
    };
    let mut facts = info.map(|i| i.facts()).unwrap_or_default();
    let mut problems = Vec::new();
    let snapshot_list = match q.map(|q| q.snapshots()) {
        Some(Ok(list)) => list.iter().map(|s| s.json()).collect(),
        Some(Err(e)) => {
            problems.push(format!("snapshot table: {e}"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let bitmaps: Vec<serde_json::Value> = match q.map(|q| q.bitmaps()) {
        Some(Ok(list)) => list.iter().map(|b| b.json()).collect(),
        Some(Err(e)) => {
            problems.push(format!("bitmaps: {e}"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let read_as_snapshot = q
        .and_then(|q| q.snapshot())
        .map(|s| serde_json::json!({"id": s.id, "name": s.name}));
    if let Some(note) = content_id_check(chain, layer) {
        facts.push(("parent CID".into(), note));
    }
    Ok(LayerJson {
        index: layer.index,
        depth: chain.depth_of(layer.index),
        filename: layer.path.clone(),
        format: layer.format.name(),
        format_probed: layer.format_probed,
        virtual_size: layer.source.len(),
        file_size: layer.storage.as_ref().map_or(0, |s| s.len()),
        over_nbd: layer.storage.is_none() && layer.nbd.is_some(),
        actual_size: match info {
            Some(i) => i.actual_size(),
            None => layer.storage.as_ref().and_then(|s| s.allocated_size()),
        },
        cluster_size: h
            .map(|h| h.cluster_size())
            .or(info.and_then(|i| i.cluster_size())),
        qcow2_version: h.map(|h| h.version),
        compat: h.map(|h| if h.version == 2 { "0.10" } else { "1.1" }),
        compression_type: h.map(|h| h.compression.name()),
        extended_l2: h.map(|h| h.extended_l2()),
        refcount_bits: h.map(|h| h.refcount_bits()),
        lazy_refcounts: h.map(|h| {
            h.compatible_features & crate::block::qcow2::header::COMPAT_LAZY_REFCOUNTS != 0
        }),
        dirty_flag: h.is_some_and(|h| h.dirty()) || info.is_some_and(|i| i.dirty()),
        corrupt: h.map(|h| h.corrupt()),
        snapshots: h.map(|h| h.nb_snapshots),
        snapshot_list,
        read_as_snapshot,
        problems,
        allocated_bytes: allocated,
        backing_filename: layer.backing_name.clone(),
        full_backing_filename: layer.backing_resolved.clone(),
        backing_filename_format: layer.backing_format.clone(),
        format_specific: info.and_then(|i| i.format_specific()).or_else(|| {
            h.map(|h| {
                // As qcow2_get_specific_info() fills it: v2 has three facts.
                let data = if h.version == 2 {
                    serde_json::json!({
                        "compat": "0.10",
                        "compression-type": h.compression.name(),
                        "refcount-bits": h.refcount_bits(),
                    })
                } else {
                    let mut data = serde_json::json!({
                        "compat": "1.1",
                        "compression-type": h.compression.name(),
                        "lazy-refcounts": h.compatible_features
                            & crate::block::qcow2::header::COMPAT_LAZY_REFCOUNTS != 0,
                        "refcount-bits": h.refcount_bits(),
                        "corrupt": h.corrupt(),
                        "extended-l2": h.extended_l2(),
                    });
                    if let Some(name) = &h.data_file {
                        super::json::set(&mut data, "data-file", name.clone());
                        super::json::set(&mut data, "data-file-raw", h.data_file_raw);
                    }
                    if !bitmaps.is_empty() {
                        super::json::set(
                            &mut data,
                            "bitmaps",
                            serde_json::Value::Array(bitmaps.clone()),
                        );
                    }
                    data
                };
                serde_json::json!({"type": "qcow2", "data": data})
            })
        }),
        children: match (&layer.storage, layer.format.name()) {
            (Some(st), "qcow2" | "raw") => Some(vec![serde_json::json!({
                "name": "file",
                "info": {
                    "children": [],
                    // The file driver's size is in whole sectors.
                    "virtual-size": st.len().div_ceil(512).saturating_mul(512),
                    "filename": layer.path,
                    "format": "file",
                    "actual-size": st.allocated_size(),
                    "format-specific": {"type": "file", "data": {}},
                    "dirty-flag": false,
                },
            })]),
            _ => None,
        },
        summary: info.map(|i| i.summary()),
        facts,
    })
}

/// A VMDK delta records its parent's content ID; qemu refuses to read
/// through a parent whose CID differs. Says whether they agree.
fn content_id_check(chain: &Chain, layer: &Layer) -> Option<String> {
    let (_, parent_cid) = layer.info.as_ref()?.content_ids()?;
    let parent_cid = parent_cid?;
    layer.backing_name.as_ref()?;
    let below = chain.layers.get(layer.index.checked_sub(1)?)?;
    let (cid, _) = below.info.as_ref()?.content_ids()?;
    Some(match cid {
        Some(c) if c == parent_cid => format!("{parent_cid:08x} (matches the parent)"),
        Some(c) => format!(
            "{parent_cid:08x}, but the parent's CID is {c:08x}: qemu refuses to read through this parent"
        ),
        None => format!("{parent_cid:08x} (the parent records no CID)"),
    })
}

/// The snapshot list as `qemu-img snapshot -l` prints it (dates in UTC).
fn write_snapshots(
    list: &[crate::block::qcow2::snapshot::SnapshotJson],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "  snapshots:")?;
    writeln!(
        out,
        "    {:<7} {:<16} {:>8} {:>19} {:>15} {:>10}",
        "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT"
    )?;
    for s in list {
        let secs = s.vm_clock_sec;
        let clock = format!(
            "{:04}:{:02}:{:02}.{:03}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            s.vm_clock_nsec / 1_000_000
        );
        let date = crate::fs::time::utc_text(i64::from(s.date_sec));
        writeln!(
            out,
            "    {:<7} {:<16} {:>8} {:>19} {:>15} {:>10}",
            printable(&s.id),
            printable(&s.name),
            human(s.vm_state_size),
            date,
            clock,
            s.icount.map(|i| i.to_string()).unwrap_or_default()
        )?;
    }
    Ok(())
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
            _ => match &l.summary {
                Some(sum) => writeln!(out, "  format:        {}{probed}", printable(sum))?,
                None => writeln!(out, "  format:        {}{probed}", l.format)?,
            },
        }
        for (label, value) in &l.facts {
            writeln!(out, "  {:<14} {}", format!("{label}:"), printable(value))?;
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
        if let Some(s) = &l.read_as_snapshot {
            writeln!(
                out,
                "  read as:       internal snapshot {} ({})",
                printable(s["id"].as_str().unwrap_or("")),
                printable(s["name"].as_str().unwrap_or(""))
            )?;
        }
        if let Some(list) = l
            .format_specific
            .as_ref()
            .and_then(|f| f.pointer("/data/bitmaps")?.as_array())
        {
            writeln!(out, "  bitmaps:")?;
            for b in list {
                let flags: Vec<&str> = b["flags"]
                    .as_array()
                    .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "    {} (granularity {}{}{})",
                    printable(b["name"].as_str().unwrap_or("")),
                    human(b["granularity"].as_u64().unwrap_or(0)),
                    if flags.is_empty() { "" } else { ", " },
                    flags.join(", ")
                )?;
            }
        }
        if !l.snapshot_list.is_empty() {
            write_snapshots(&l.snapshot_list, out)?;
        }
        for p in &l.problems {
            writeln!(out, "  problem:       {}", printable(p))?;
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
