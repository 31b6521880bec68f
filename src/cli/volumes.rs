//! `layerscope volumes`: the volume stack of a disk, as a tree: the
//! partition table (with its CRCs and problems), the partitions, the LVM
//! volume groups and logical volumes, what each volume holds (like `blkid
//! -p`), and which chain layers hold its bytes.
use std::io::Write;
use std::sync::Arc;

use serde_json::{json, Value};

use super::ImageArgs;
use crate::block::layered::LayeredReader;
use crate::block::BlockSource;
use crate::volume::layers::{shares, Shares};
use crate::volume::{Role, Volume, VolumeTree};

// Arguments of `volumes`.
#[derive(Debug, clap::Args)]
pub struct VolumesArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// See the disk as of layer N of the chain (0 is the base).
    #[arg(long)]
    pub layer: Option<usize>,
}

/// Most disk areas listed per volume in JSON (a striped LV has one per
/// stripe and segment).
const MAX_AREAS_SHOWN: usize = 256;

/// `volumes`.
///
/// # Errors
/// Opening the image; read errors.
pub fn run(args: &VolumesArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let chain = args.image.open()?;
    let chain = match args.layer {
        Some(n) if n >= chain.layers.len() => {
            anyhow::bail!(
                "--layer {n}: the chain has layers 0 to {}",
                chain.layers.len().saturating_sub(1)
            )
        }
        Some(n) => chain.cut(n),
        None => chain,
    };
    let reader = Arc::new(LayeredReader::new(&chain)?);
    let disk: Arc<dyn BlockSource> = reader.clone();
    let tree = crate::volume::scan(disk.clone())?;
    // Which volumes hold a filesystem layerscope decodes (the others are
    // named, "not decoded").
    let decoded: Vec<bool> = tree
        .volumes
        .iter()
        .map(|v| {
            v.content.kind.is_some()
                && v.source_over(disk.clone())
                    .is_ok_and(|src| crate::fs::probe(src).is_ok())
        })
        .collect();
    let layers: Vec<Shares> = tree
        .volumes
        .iter()
        .map(|v| shares(&reader, v))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = chain
        .layers
        .iter()
        .map(|l| l.path.rsplit('/').next().unwrap_or(&l.path).to_owned())
        .collect();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &to_json(&tree, &layers, &decoded, &names))?;
        writeln!(out)?;
        return Ok(());
    }
    text(&tree, &layers, &decoded, out)
}

fn to_json(tree: &VolumeTree, layers: &[Shares], decoded: &[bool], names: &[String]) -> Value {
    let volumes: Vec<Value> = tree
        .volumes
        .iter()
        .zip(layers)
        .zip(decoded)
        .map(|((v, l), decoded)| {
            let mut j = serde_json::to_value(v).unwrap_or(Value::Null);
            let areas = v.geometry().map(|g| g.disk_areas()).unwrap_or_default();
            super::json::set(
                &mut j,
                "start",
                json!(v.geometry().and_then(|g| g.window_start())),
            );
            super::json::set(
                &mut j,
                "areas",
                json!(areas.iter().take(MAX_AREAS_SHOWN).collect::<Vec<_>>()),
            );
            super::json::set(&mut j, "areas_total", json!(areas.len()));
            super::json::set(&mut j, "layers", json!(l));
            super::json::set(&mut j, "decoded", json!(decoded));
            j
        })
        .collect();
    json!({
        "disk": {"name": crate::escape::printable(&tree.disk_name), "size": tree.disk_len},
        "layers": names.iter().map(|n| crate::escape::printable(n)).collect::<Vec<_>>(),
        "table": tree.table,
        "volumes": volumes,
        "groups": tree.groups,
        "problems": tree.all_problems(),
    })
}

/// `2:4 KiB 0:12 MiB none:8 MiB`.
fn layer_text(s: &Shares) -> String {
    let mut parts: Vec<String> = s
        .shares
        .iter()
        .map(|x| match x.layer {
            Some(l) => format!("{l}:{}", crate::units::human(x.bytes)),
            None => format!("none:{}", crate::units::human(x.bytes)),
        })
        .collect();
    if s.unknown > 0 {
        parts.push(format!("not walked:{}", crate::units::human(s.unknown)));
    }
    parts.join(" ")
}

/// `ext4 "root" 1b2c…`.
fn content_text(v: &Volume, decoded: bool) -> String {
    if let Some(u) = &v.unsupported {
        return u.clone();
    }
    let c = &v.content;
    let Some(kind) = c.kind else {
        return "unknown content".into();
    };
    let mut s = kind.to_owned();
    if let Some(ver) = &c.version {
        s.push_str(&format!(" ({ver})"));
    }
    if let Some(l) = &c.label {
        s.push_str(&format!(" label \"{l}\""));
    }
    if let Some(u) = &c.uuid {
        s.push_str(&format!(" uuid {u}"));
    }
    if let Some(size) = c.size {
        s.push_str(&format!(" size {}", crate::units::human(size)));
    }
    if !c.also.is_empty() {
        s.push_str(&format!(" (also looks like {})", c.also.join(", ")));
    }
    if !decoded && c.usage == Some("filesystem") {
        s.push_str(" [not decoded]");
    }
    s
}

fn text(
    tree: &VolumeTree,
    layers: &[Shares],
    decoded: &[bool],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let p = crate::escape::printable;
    let decoded_of = |v: &Volume| {
        tree.volumes
            .iter()
            .position(|x| x.name == v.name)
            .and_then(|i| decoded.get(i).copied())
            .unwrap_or(false)
    };
    let line = |out: &mut dyn Write,
                indent: &str,
                v: &Volume,
                l: &Shares,
                what: &str|
     -> std::io::Result<()> {
        let start = v
            .geometry()
            .and_then(|g| g.window_start())
            .map_or_else(|| "segments".to_owned(), |s| format!("{s:#x}"));
        writeln!(
            out,
            "{:<16} {:>12} {:>11}  {what}{}",
            format!("{indent}{}", p(&v.name)),
            start,
            crate::units::human(v.len),
            p(&content_text(v, decoded_of(v)))
        )?;
        if !l.shares.is_empty() || l.unknown > 0 {
            writeln!(out, "{:<16} layers: {}", "", layer_text(l))?;
        }
        Ok(())
    };
    writeln!(out, "{:<16} {:>12} {:>11}  what", "volume", "start", "size")?;
    let mut rows = tree.volumes.iter().zip(layers);
    if let Some((disk, l)) = rows.next() {
        let what = match &tree.table {
            Some(t) => format!("{} partition table; ", t.label),
            None => String::new(),
        };
        line(out, "", disk, l, &what)?;
    }
    if let Some(t) = &tree.table {
        let mut head = format!(
            "  table {}: {}-byte sectors, id {}",
            t.label, t.sector_size, t.id
        );
        if let Some(g) = &t.gpt {
            let crc =
                |h: &crate::volume::table::GptHeader| match (&h.error, h.header_crc, h.entries_crc)
                {
                    (Some(e), _, _) => format!("LBA {}: {e}", h.lba),
                    (None, Some(a), Some(b)) => format!(
                        "LBA {}: header CRC {:#010x} ok, entries CRC {:#010x} ok",
                        h.lba, a.stored, b.stored
                    ),
                    _ => format!("LBA {}", h.lba),
                };
            head.push_str(&format!("; primary {}", crc(&g.primary)));
            if let Some(b) = &g.backup {
                head.push_str(&format!("; backup {}", crc(b)));
            }
            head.push_str(&format!("; using the {} header", g.used));
        }
        writeln!(out, "{}", p(&head))?;
    }
    for (v, l) in tree.volumes.iter().zip(layers).skip(1) {
        match &v.role {
            Role::Partition(part) => {
                let mut what = part.type_name.map_or_else(
                    || format!("type {}", part.kind),
                    |n| format!("{n} ({})", part.kind),
                );
                if !part.name.is_empty() {
                    what.push_str(&format!(" \"{}\"", part.name));
                }
                if part.bootable {
                    what.push_str(" (boot)");
                }
                what.push_str(": ");
                line(out, "  ", v, l, &what)?;
            }
            Role::Logical { .. } | Role::Disk => {}
        }
    }
    for g in &tree.groups {
        let pvs: Vec<String> = g
            .pvs
            .iter()
            .map(|pv| {
                format!(
                    "{} on {}",
                    pv.key,
                    pv.volume.as_deref().unwrap_or("(missing)")
                )
            })
            .collect();
        writeln!(
            out,
            "{}",
            p(&format!(
                "VG {}: uuid {}, seqno {}, extents of {}, PVs {}",
                g.name,
                g.uuid,
                g.seqno,
                crate::units::human(g.extent_size),
                pvs.join(", ")
            ))
        )?;
        for (v, l) in tree.volumes.iter().zip(layers) {
            if let Role::Logical { vg, lv } = &v.role {
                if vg == &g.name {
                    let hidden = if lv.visible { "" } else { "hidden " };
                    line(out, "  ", v, l, &format!("{hidden}{} LV: ", lv.layout))?;
                }
            }
        }
    }
    for problem in tree.all_problems() {
        writeln!(out, "problem: {}", p(&problem.to_string()))?;
    }
    Ok(())
}
