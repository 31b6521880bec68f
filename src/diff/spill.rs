//! Sorting more records than memory should hold: records (a [`Key`] and
//! bytes) are kept up to a budget, then sorted and written as a run to
//! an unlinked temporary file; at the end the runs are merged (at most
//! `fan_in` at a time) and read back in key order. Nothing is written
//! while everything fits the budget. The file is unlinked as soon as it
//! is made, so it goes away with the process however that ends.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::paths::{Class, Key};
use super::Kind;
use crate::bytes::u64_of;

/// Bytes read or written at a time per run.
const IO_CHUNK: usize = 64 * 1024;

/// How much is kept before spilling.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Bytes of records kept in memory before they are written as a run.
    pub run_bytes: usize,
    /// Runs merged at once (each has an [`IO_CHUNK`] buffer).
    pub fan_in: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            run_bytes: 4 << 20,
            fan_in: 64,
        }
    }
}

/// Records being sorted.
pub struct Runs {
    budget: Budget,
    kept: Vec<(Key, Vec<u8>)>,
    kept_bytes: usize,
    file: Option<File>,
    /// Runs written: offset and length in `file`.
    runs: Vec<(u64, u64)>,
    end: u64,
}

impl Runs {
    pub fn new(budget: Budget) -> Runs {
        Runs {
            budget,
            kept: Vec::new(),
            kept_bytes: 0,
            file: None,
            runs: Vec::new(),
            end: 0,
        }
    }

    /// Adds a record.
    ///
    /// # Errors
    /// Writing the temporary file.
    pub fn push(&mut self, key: Key, bytes: Vec<u8>) -> io::Result<()> {
        self.kept_bytes = self
            .kept_bytes
            .saturating_add(key.path.len())
            .saturating_add(bytes.len())
            .saturating_add(64);
        self.kept.push((key, bytes));
        if self.kept_bytes > self.budget.run_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Whether records went to the temporary file.
    pub fn spilled(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Runs written so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Writes the kept records, sorted, as a run.
    fn spill(&mut self) -> io::Result<()> {
        let mut kept = std::mem::take(&mut self.kept);
        self.kept_bytes = 0;
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        let mut w = self.writer()?;
        for (k, b) in &kept {
            w.record(k, b)?;
        }
        let run = w.finish()?;
        self.runs.push(run);
        Ok(())
    }

    fn writer(&mut self) -> io::Result<RunWriter<'_>> {
        if self.file.is_none() {
            self.file = Some(temp_file()?);
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no temporary file"))?;
        Ok(RunWriter {
            file,
            end: &mut self.end,
            start: 0,
            buf: Vec::with_capacity(IO_CHUNK),
        }
        .started())
    }

    /// Every record, in key order.
    ///
    /// # Errors
    /// Reading or writing the temporary file.
    pub fn finish(mut self) -> io::Result<Merged> {
        let mut kept = std::mem::take(&mut self.kept);
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        let fan_in = self.budget.fan_in.max(2);
        // Fewer runs than `fan_in` (the kept records are one more source).
        while self.runs.len() >= fan_in {
            let take = fan_in.min(self.runs.len());
            let group: Vec<(u64, u64)> = self.runs.drain(..take).collect();
            let file = self
                .file
                .as_ref()
                .ok_or_else(|| io::Error::other("no temporary file"))?
                .try_clone()?;
            let mut merged = Merged::new(file, &group, Vec::new())?;
            let mut w = self.writer()?;
            while let Some((k, b)) = merged.next_record()? {
                w.record(&k, &b)?;
            }
            let run = w.finish()?;
            self.runs.push(run);
        }
        match self.file {
            Some(f) => Merged::new(f, &self.runs, kept),
            None => Ok(Merged {
                sources: vec![Source::Kept(kept.into_iter())],
                heap: BinaryHeap::new(),
                heads: Vec::new(),
                started: false,
                file: None,
            }),
        }
    }
}

/// A temporary file, unlinked at once, in `$TMPDIR`.
pub(super) fn temp_file() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for n in 0u32..64 {
        let path = dir.join(format!(
            ".layerscope-diff-{}-{nanos}-{n}",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("a temporary file in {}: {e}", dir.display()),
                ))
            }
        }
    }
    Err(io::Error::other(format!(
        "no temporary file could be made in {}",
        dir.display()
    )))
}

/// Writes one run at the end of the file.
struct RunWriter<'a> {
    file: &'a File,
    end: &'a mut u64,
    start: u64,
    buf: Vec<u8>,
}

impl RunWriter<'_> {
    fn started(mut self) -> Self {
        self.start = *self.end;
        self
    }

    fn record(&mut self, k: &Key, bytes: &[u8]) -> io::Result<()> {
        encode(&mut self.buf, k, bytes)?;
        if self.buf.len() >= IO_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.buf, *self.end)?;
        *self.end = self.end.saturating_add(u64_of(self.buf.len()));
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<(u64, u64)> {
        self.flush()?;
        Ok((self.start, self.end.saturating_sub(self.start)))
    }
}

fn len32(n: usize) -> io::Result<[u8; 4]> {
    u32::try_from(n)
        .map(u32::to_le_bytes)
        .map_err(|_| io::Error::other("a record over 4 GiB"))
}

/// A record: path length, path, kind, class, source, sequence, bytes'
/// length, bytes.
fn encode(out: &mut Vec<u8>, k: &Key, bytes: &[u8]) -> io::Result<()> {
    out.extend_from_slice(&len32(k.path.len())?);
    out.extend_from_slice(&k.path);
    out.push(kind_byte(k.kind));
    out.push(class_byte(k.class));
    out.push(k.src);
    out.extend_from_slice(&k.seq.to_le_bytes());
    out.extend_from_slice(&len32(bytes.len())?);
    out.extend_from_slice(bytes);
    Ok(())
}

const KINDS: [Kind; 4] = [Kind::Added, Kind::Deleted, Kind::Modified, Kind::Moved];
const CLASSES: [Class; 5] = [
    Class::Replaced,
    Class::Found,
    Class::Dropped,
    Class::OtherName,
    Class::Expanded,
];

fn kind_byte(k: Kind) -> u8 {
    (0u8..)
        .zip(KINDS)
        .find(|(_, x)| *x == k)
        .map_or(0, |(i, _)| i)
}

fn class_byte(c: Class) -> u8 {
    (0u8..)
        .zip(CLASSES)
        .find(|(_, x)| *x == c)
        .map_or(0, |(i, _)| i)
}

fn bad() -> io::Error {
    io::Error::other("a damaged record in the temporary file")
}

/// Records of one run, read back.
struct RunReader {
    at: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl RunReader {
    /// Makes `n` bytes from `pos` on available; false at the run's end.
    fn fill(&mut self, file: &File, n: usize) -> io::Result<bool> {
        let have = self.buf.len().saturating_sub(self.pos);
        if have >= n {
            return Ok(true);
        }
        self.buf.drain(..self.pos.min(self.buf.len()));
        self.pos = 0;
        while self.buf.len() < n {
            let left = self.end.saturating_sub(self.at);
            if left == 0 {
                return Ok(false);
            }
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(IO_CHUNK.max(n.saturating_sub(self.buf.len())));
            let from = self.buf.len();
            self.buf.resize(from.saturating_add(want), 0);
            let got = file.read_at(self.buf.get_mut(from..).unwrap_or_default(), self.at)?;
            self.buf.truncate(from.saturating_add(got));
            if got == 0 {
                return Err(bad());
            }
            self.at = self.at.saturating_add(u64_of(got));
        }
        Ok(true)
    }

    fn take(&mut self, file: &File, n: usize) -> io::Result<&[u8]> {
        if !self.fill(file, n)? {
            return Err(bad());
        }
        let end = self.pos.saturating_add(n);
        let s = self.buf.get(self.pos..end).ok_or_else(bad)?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, file: &File) -> io::Result<usize> {
        let b: [u8; 4] = self.take(file, 4)?.try_into().map_err(|_| bad())?;
        usize::try_from(u32::from_le_bytes(b)).map_err(|_| bad())
    }

    fn next(&mut self, file: &File) -> io::Result<Option<(Key, Vec<u8>)>> {
        if !self.fill(file, 1)? {
            return Ok(None);
        }
        let n = self.u32(file)?;
        let path = self.take(file, n)?.to_vec();
        let head: [u8; 11] = self.take(file, 11)?.try_into().map_err(|_| bad())?;
        let [kind, class, src, s @ ..] = head;
        let kind = *KINDS.get(usize::from(kind)).ok_or_else(bad)?;
        let class = *CLASSES.get(usize::from(class)).ok_or_else(bad)?;
        let seq = u64::from_le_bytes(s);
        let n = self.u32(file)?;
        let bytes = self.take(file, n)?.to_vec();
        Ok(Some((
            Key {
                path,
                kind,
                class,
                src,
                seq,
            },
            bytes,
        )))
    }
}

enum Source {
    Run(RunReader),
    Kept(std::vec::IntoIter<(Key, Vec<u8>)>),
}

/// Records of several sorted sources, in key order.
pub struct Merged {
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(Key, usize)>>,
    heads: Vec<Option<Vec<u8>>>,
    started: bool,
    /// The file the runs are in.
    file: Option<File>,
}

impl Merged {
    fn new(file: File, runs: &[(u64, u64)], kept: Vec<(Key, Vec<u8>)>) -> io::Result<Merged> {
        let mut sources: Vec<Source> = runs
            .iter()
            .map(|&(at, len)| {
                Source::Run(RunReader {
                    at,
                    end: at.saturating_add(len),
                    buf: Vec::new(),
                    pos: 0,
                })
            })
            .collect();
        sources.push(Source::Kept(kept.into_iter()));
        let mut m = Merged {
            sources,
            heap: BinaryHeap::new(),
            heads: Vec::new(),
            started: false,
            file: Some(file),
        };
        m.start()?;
        Ok(m)
    }

    fn pull(&mut self, i: usize) -> io::Result<()> {
        let rec = match self.sources.get_mut(i) {
            Some(Source::Run(r)) => match &self.file {
                Some(file) => r.next(file)?,
                None => return Err(bad()),
            },
            Some(Source::Kept(it)) => it.next(),
            None => None,
        };
        if let Some((k, b)) = rec {
            if let Some(h) = self.heads.get_mut(i) {
                *h = Some(b);
            }
            self.heap.push(Reverse((k, i)));
        }
        Ok(())
    }

    fn start(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        self.heads = (0..self.sources.len()).map(|_| None).collect();
        for i in 0..self.sources.len() {
            self.pull(i)?;
        }
        Ok(())
    }

    /// The next record in key order.
    ///
    /// # Errors
    /// Reading the temporary file.
    pub fn next_record(&mut self) -> io::Result<Option<(Key, Vec<u8>)>> {
        self.start()?;
        let Some(Reverse((k, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let b = self
            .heads
            .get_mut(i)
            .and_then(Option::take)
            .unwrap_or_default();
        self.pull(i)?;
        Ok(Some((k, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, seq: u64) -> Key {
        Key {
            path: p.as_bytes().to_vec(),
            kind: Kind::Modified,
            class: Class::Found,
            src: 1,
            seq,
        }
    }

    #[test]
    fn spilled_runs_merge_in_key_order() {
        for (run_bytes, fan_in) in [(usize::MAX, 64), (1, 2), (300, 3)] {
            let mut r = Runs::new(Budget { run_bytes, fan_in });
            let mut want = Vec::new();
            for i in 0..500u64 {
                let p = format!("/d/{:03}", (i * 7919) % 1000);
                let body = vec![u8::try_from(i % 251).unwrap(); usize::try_from(i % 97).unwrap()];
                want.push((key(&p, i), body.clone()));
                r.push(key(&p, i), body).unwrap();
            }
            assert_eq!(r.spilled(), run_bytes != usize::MAX);
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let mut m = r.finish().unwrap();
            let mut got = Vec::new();
            while let Some(rec) = m.next_record().unwrap() {
                got.push(rec);
            }
            assert_eq!(got, want, "run_bytes {run_bytes} fan_in {fan_in}");
        }
    }
}
