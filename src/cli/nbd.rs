//! `layerscope nbd-info` and `layerscope exports`.
use std::io::Write;

use serde::Serialize;

use super::{ExportsArgs, NbdInfoArgs};
use crate::block::nbd::proto::TFLAG_NAMES;
use crate::block::nbd::status::StatsSnapshot;
use crate::block::nbd::{list_exports, ExportInfo, NbdClient, NbdUri};
use crate::escape::printable;
use crate::units::human;

#[derive(Serialize)]
struct InfoJson<'a> {
    uri: String,
    /// As libnbd names it ("newstyle-fixed", "oldstyle").
    protocol: &'static str,
    /// The connection is encrypted.
    tls: bool,
    #[serde(flatten)]
    export: &'a ExportInfo,
    flag_names: Vec<&'static str>,
    status: StatsSnapshot,
}

/// Prints what the server said and the connection's counters.
///
/// # Errors
/// Bad URI; connection errors.
pub fn info(args: &NbdInfoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let uri = NbdUri::parse(&args.uri).map_err(anyhow::Error::msg)?;
    let mut opts = args.remote.nbd_options();
    // One more round trip: every context the server offers, as nbdinfo
    // lists them (dirty bitmaps among them).
    opts.meta.list = true;
    let client = NbdClient::connect(uri.clone(), opts)?;
    let e = client.info();
    let names: Vec<&'static str> = TFLAG_NAMES
        .iter()
        .filter(|(b, _)| e.flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if args.json {
        let j = InfoJson {
            uri: uri.to_string(),
            protocol: e.protocol(),
            tls: e.tls,
            export: e,
            flag_names: names,
            status: client.stats().snapshot(),
        };
        crate::escape::json::to_writer_pretty(&mut *out, &j)?;
        writeln!(out)?;
        return Ok(());
    }
    let opt = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    writeln!(out, "uri:               {}", printable(&uri.to_string()))?;
    writeln!(out, "export:            {:?}", printable(&e.name))?;
    if let Some(d) = &e.description {
        writeln!(out, "description:       {}", printable(d))?;
    }
    writeln!(
        out,
        "size:              {} ({} bytes)",
        human(e.size),
        e.size
    )?;
    writeln!(out, "handshake:         {} ({})", e.handshake, e.protocol())?;
    writeln!(
        out,
        "tls:               {}",
        if e.tls { "yes" } else { "no" }
    )?;
    writeln!(
        out,
        "flags:             {:#06x} {}",
        e.flags,
        names.join(" ")
    )?;
    writeln!(
        out,
        "block size:        min {} preferred {} max {}",
        opt(e.block_min),
        opt(e.block_preferred),
        opt(e.block_max)
    )?;
    writeln!(
        out,
        "structured replies: {}",
        if e.structured_replies { "yes" } else { "no" }
    )?;
    let ctx: Vec<String> = e
        .meta_contexts
        .iter()
        .map(|(id, n)| format!("{} (id {id})", printable(n)))
        .collect();
    writeln!(
        out,
        "meta contexts:     {}",
        if ctx.is_empty() {
            "-".into()
        } else {
            ctx.join(", ")
        }
    )?;
    if let Some(all) = &e.contexts {
        let all: Vec<String> = all.iter().map(|n| printable(n)).collect();
        writeln!(
            out,
            "contexts:          {}",
            if all.is_empty() {
                "-".into()
            } else {
                all.join(" ")
            }
        )?;
    }
    let s = client.stats().snapshot();
    writeln!(out, "state:             {:?}", s.state)?;
    Ok(())
}

/// Lists exports.
///
/// # Errors
/// Bad URI; connection errors; servers that refuse listing.
pub fn exports(args: &ExportsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let uri = NbdUri::parse(&args.uri).map_err(anyhow::Error::msg)?;
    let list = list_exports(&uri, &args.remote.nbd_options())?;
    if args.json {
        let v: Vec<_> = list
            .iter()
            .map(|(n, d)| serde_json::json!({"name": n, "description": d}))
            .collect();
        crate::escape::json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    for (name, desc) in &list {
        // The default export's name is empty: shown quoted, as nbdinfo
        // --list does, rather than as a blank line.
        let shown = if name.is_empty() {
            "\"\" (the default export)".to_owned()
        } else {
            printable(name)
        };
        if desc.is_empty() {
            writeln!(out, "{shown}")?;
        } else {
            writeln!(out, "{shown}\t{}", printable(desc))?;
        }
    }
    Ok(())
}
