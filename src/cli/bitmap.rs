//! `layerscope map --bitmap NAME` and `map --context CONTEXT`: a
//! persistent dirty bitmap's ranges (read from the qcow2 file itself, no
//! qemu-nbd needed) or an NBD server's metadata context, in nbdinfo's
//! words.
use std::io::Write;

use anyhow::Context;

use super::MapArgs;
use crate::block::chain::Chain;
use crate::block::nbd::{is_nbd_uri, map::describe, MetaQuery, NbdClient, NbdUri};
use crate::block::{BlockError, BlockSource};
use crate::escape::printable;

/// `map`: the allocation map, or a bitmap's or a context's runs.
///
/// # Errors
/// As [`run`], [`context`] and [`super::map::run`].
pub fn map(args: &MapArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let remote = is_nbd_uri(&args.image.image);
    if let Some(ctx) = &args.context {
        if !remote {
            anyhow::bail!(
                "--context reads an NBD server's metadata context, and {} is not an NBD URI \
                 (a qcow2 file's persistent bitmap: --bitmap NAME)",
                printable(&args.image.image)
            );
        }
        return context(args, ctx, out);
    }
    let chain = args.image.open()?;
    match &args.bitmap {
        // Over NBD a bitmap is the server's context, unless the export's
        // bytes are themselves a qcow2 file (`-f qcow2`, or probed).
        Some(name) if remote && chain.top().is_some_and(|t| t.qcow2.is_none()) => {
            drop(chain);
            context(args, &format!("qemu:dirty-bitmap:{name}"), out)
        }
        Some(name) => run(&chain, name, args.json, out),
        None => super::map::run(&chain, args.json, out),
    }
}

/// Prints runs as `nbdinfo --map` does: text rows, or its `--json` array.
struct Printer<'a> {
    out: &'a mut dyn Write,
    json: bool,
    first: bool,
}

impl<'a> Printer<'a> {
    fn new(out: &'a mut dyn Write, json: bool) -> Printer<'a> {
        Printer {
            out,
            json,
            first: true,
        }
    }

    fn row(&mut self, offset: u64, len: u64, kind: u32, what: &str) -> std::io::Result<()> {
        let what = printable(what);
        let r = if self.json {
            let line = format!(
                "{}{{ \"offset\": {offset}, \"length\": {len}, \"type\": {kind}, \"description\": \"{what}\"}}",
                if self.first { "[\n" } else { ",\n" }
            );
            self.out.write_all(line.as_bytes())
        } else {
            writeln!(self.out, "{offset:>10}  {len:>10}  {kind:>3}  {what}")
        };
        self.first = false;
        r
    }

    fn end(self) -> std::io::Result<()> {
        if self.json {
            self.out
                .write_all(if self.first { b"[\n]\n" } else { b"\n]\n" })?;
        }
        Ok(())
    }
}

/// Prints the runs of bitmap `name` of the top layer: text as
/// `nbdinfo --map` prints them, or its `--json` array.
///
/// # Errors
/// A top layer that is not qcow2; no such bitmap; a damaged bitmap; write
/// errors.
pub fn run(chain: &Chain, name: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let top = chain.top().context("an empty chain")?;
    let Some(q) = top.qcow2.as_ref() else {
        anyhow::bail!(
            "{}: persistent bitmaps are a qcow2 feature, and this is {}",
            printable(&top.path),
            top.format.name()
        );
    };
    let mut p = Printer::new(out, json);
    let mut each = |offset: u64, len: u64, dirty: bool| -> Result<(), BlockError> {
        let (kind, what) = if dirty { (1, "dirty") } else { (0, "clean") };
        p.row(offset, len, kind, what)
            .map_err(|e| BlockError::io("stdout", "writing the bitmap map", offset, e))
    };
    q.bitmap_runs(name, &mut each)?;
    p.end()?;
    Ok(())
}

/// Calls `each(offset, length, flags)` with the runs of metadata context
/// `ctx` of the NBD export `image` names, on a connection of its own
/// that negotiates it; where the map stopped, when it did.
///
/// # Errors
/// A bad URI; connection errors; a context the server does not offer.
pub(super) fn nbd_context_runs(
    image: &super::ImageArgs,
    ctx: &str,
    each: &mut dyn FnMut(u64, u64, u32) -> Result<(), BlockError>,
) -> anyhow::Result<Option<crate::block::nbd::map::Stopped>> {
    let uri = NbdUri::parse(&image.image).map_err(anyhow::Error::msg)?;
    let mut opts = image.remote.nbd_options();
    opts.meta = MetaQuery {
        extra: vec![ctx.to_owned()],
        list: false,
    };
    let client = NbdClient::connect(uri, opts)?;
    Ok(client.context_map(ctx, 0, client.len(), each)?)
}

/// Prints the runs of metadata context `ctx` of the NBD export, as
/// `nbdinfo --map=CTX` does.
///
/// # Errors
/// Connection errors; a context the server does not offer; a map cut
/// short by its bounds (after printing what was mapped).
pub fn context(args: &MapArgs, ctx: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut p = Printer::new(out, args.json);
    let mut each = |offset: u64, len: u64, flags: u32| -> Result<(), BlockError> {
        p.row(offset, len, flags, &describe(ctx, flags))
            .map_err(|e| BlockError::io("stdout", "writing the map", offset, e))
    };
    let stopped = nbd_context_runs(&args.image, ctx, &mut each)?;
    p.end()?;
    if let Some(stop) = stopped {
        out.flush()?;
        anyhow::bail!("{}: {stop}", printable(&args.image.image));
    }
    Ok(())
}
