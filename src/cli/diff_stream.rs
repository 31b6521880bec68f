//! The quick ext `diff`, written as it is made: each change is made into
//! its text line or its JSON as the diff hands it over
//! ([`crate::diff::quick::diff_each`]), kept with its place in the list,
//! and sorted through a temporary file past a budget
//! ([`crate::diff::spill`]), so that memory does not follow the number
//! of files changed in place. The output is what the whole list would
//! print.
use std::io::Write;

use crate::diff::paths::{keep, Class, Item, Key, Level};
use crate::diff::quick::{diff_each, Part};
use crate::diff::spill::{Budget, Runs};
use crate::diff::{Change, DiffError};
use crate::fs::ext::Ext4;

use super::diff::{summary, text_line, write_json, Bar, DiffArgs, Sides};

/// Inodes compared and named per batch.
const BATCH: usize = 4096;

/// The batch and the budget: `LAYERSCOPE_DIFF_SPILL=BATCH,RUN_BYTES,FAN_IN`
/// sets them (tests make them tiny, so that a small diff spills).
/// With it, stderr says how many batches and runs there were.
fn sizes() -> (usize, Budget, bool) {
    let mut budget = Budget::default();
    let mut batch = BATCH;
    let mut told = false;
    if let Ok(v) = std::env::var("LAYERSCOPE_DIFF_SPILL") {
        let n: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        if let [b, r, f] = n.as_slice() {
            batch = (*b).max(1);
            budget.run_bytes = *r;
            budget.fan_in = (*f).max(2);
            told = true;
        }
    }
    (batch, budget, told)
}

/// A change as the output prints it: its text line, or its JSON laid out
/// as an element of the `changes` list.
fn render(c: &Change, json: bool) -> Result<Vec<u8>, DiffError> {
    if !json {
        return Ok(text_line(c).into_bytes());
    }
    let v = serde_json::to_value(c).map_err(std::io::Error::other)?;
    let mut one = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut one,
        crate::escape::json::Escaping(serde_json::ser::PrettyFormatter::new()),
    );
    serde::Serialize::serialize(&v, &mut ser).map_err(std::io::Error::other)?;
    // Two levels deeper in the document (strings hold no raw newline).
    let mut out = Vec::with_capacity(one.len().saturating_add(64));
    for &b in &one {
        out.push(b);
        if b == b'\n' {
            out.extend_from_slice(b"    ");
        }
    }
    Ok(out)
}

/// `diff` of two ext views by the quick diff: `held` the volume ranges
/// the overlays hold.
pub(super) fn quick(
    args: &DiffArgs,
    sides: &Sides,
    (o, n): (&Ext4, &Ext4),
    held: &[(u64, u64)],
    bar: &Bar,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (batch, budget, tell) = sizes();
    let mut batches = 0usize;
    let json = args.json;
    let paths = !args.by_inode;
    let mut runs = Runs::new(budget);
    let mut level: Option<Level> = None;
    let mut notes = Vec::new();
    let mut seq = 0u64;
    let mut each = |part: Part| -> Result<(), DiffError> {
        if matches!(part, Part::InPlace(_)) {
            batches = batches.saturating_add(1);
        }
        let items = match part {
            Part::Names(c) if paths => {
                let (l, items) = Level::names(c, o, n, !args.no_expand, &mut notes);
                level = Some(l);
                items
            }
            Part::InPlace(c) if paths => {
                let l = match &mut level {
                    Some(l) => l,
                    None => level.insert(Level::names(Vec::new(), o, n, false, &mut notes).0),
                };
                l.in_place(c)
            }
            // A new file's name is an added path and nothing else, a
            // deleted file's a deleted path.
            Part::Added(c) | Part::Deleted(c) => c
                .into_iter()
                .map(|c| {
                    seq = seq.saturating_add(1);
                    Item::new(c, Class::Found, 2, seq)
                })
                .collect(),
            Part::Names(c) | Part::InPlace(c) => c
                .into_iter()
                .map(|c| {
                    seq = seq.saturating_add(1);
                    Item::new(c, Class::Found, 0, seq)
                })
                .collect(),
        };
        for it in items {
            let bytes = render(&it.change, json)?;
            runs.push(it.key, bytes)?;
        }
        Ok(())
    };
    let mut result = diff_each(o, n, held, bar, batch, &mut each)?;
    result.notes.extend(notes);
    bar.0.finish_and_clear();
    if tell {
        eprintln!(
            "layerscope: spill: {batches} batch(es) in place, {} run(s)",
            runs.runs()
        );
    }
    let mut merged = runs.finish()?;
    // The document around the list: what it is with no changes.
    let (head, tail) = if json {
        let terms = if paths { "paths" } else { "inodes" };
        let mut doc = Vec::new();
        write_json(&mut doc, sides, "clusters", terms, &result)?;
        let at = memchr::memmem::find(&doc, b"[]")
            .ok_or_else(|| anyhow::anyhow!("no changes list in the JSON"))?;
        let (h, t) = doc.split_at(at.saturating_add(1));
        (h.to_vec(), t.to_vec())
    } else {
        (Vec::new(), Vec::new())
    };
    out.write_all(&head)?;
    let mut count = 0usize;
    let mut group: Vec<(Key, Vec<u8>)> = Vec::new();
    let mut flush = |group: &mut Vec<(Key, Vec<u8>)>, out: &mut dyn Write| -> anyhow::Result<()> {
        // A name found twice (listed with its directory and walked with a
        // new tree) is one change.
        let mut i = 0;
        while i < group.len() {
            let (a, b) = group.split_at(i);
            if b.first().is_some_and(|(k, x)| {
                a.iter()
                    .any(|(j, y)| j.kind == k.kind && j.class == k.class && y == x)
            }) {
                group.remove(i);
            } else {
                i = i.saturating_add(1);
            }
        }
        let classes: Vec<Class> = group.iter().map(|(k, _)| k.class).collect();
        for ((_, bytes), kept) in group.drain(..).zip(keep(&classes)) {
            if !kept {
                continue;
            }
            if json {
                out.write_all(if count == 0 { b"\n    " } else { b",\n    " })?;
            }
            out.write_all(&bytes)?;
            count = count.saturating_add(1);
        }
        Ok(())
    };
    while let Some((k, bytes)) = merged.next_record()? {
        if group.first().is_some_and(|(g, _)| g.path != k.path) {
            flush(&mut group, out)?;
        }
        group.push((k, bytes));
    }
    flush(&mut group, out)?;
    if json {
        if count > 0 {
            out.write_all(b"\n  ")?;
        }
        out.write_all(&tail)?;
        return Ok(());
    }
    summary(args, sides, &result, count, out)
}
