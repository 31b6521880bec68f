//! The names of files new in the newer view, as the quick diff finds them
//! (a mass create, a tree copied in, a package unpacked): each is an
//! added path and nothing else, so they need not wait in memory for the
//! names that pair across the tree (moves, hard links, replaced paths).
//! They are kept up to a count, then written to an unlinked temporary
//! file, and read back (in the order found) when the other names are
//! done; memory does not follow the number of files created (issue 19).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::Name;
use crate::bytes::{u64_of, us};
use crate::fs::node::FileType;

/// Bytes written or read at a time.
const IO_CHUNK: usize = 64 * 1024;

/// The type a [`Name`] carries, by its byte in a record: a
/// [`FileType`]'s place in [`FileType::ALL`], or one past them for the
/// name of none ("unknown": a file no view can read).
const UNKNOWN: &str = "unknown";

/// Names, in the order pushed.
pub(super) struct NameSpill {
    /// Names kept in memory before they go to the file.
    keep: usize,
    kept: Vec<Name>,
    file: Option<File>,
    buf: Vec<u8>,
    /// Bytes written to the file.
    end: u64,
    len: u64,
}

impl NameSpill {
    /// Keeps up to `keep` names in memory.
    pub(super) fn new(keep: usize) -> NameSpill {
        NameSpill {
            keep: keep.max(1),
            kept: Vec::new(),
            file: None,
            buf: Vec::new(),
            end: 0,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a name.
    ///
    /// # Errors
    /// Making or writing the temporary file.
    pub(super) fn push(&mut self, n: Name) -> io::Result<()> {
        self.len = self.len.saturating_add(1);
        if self.kept.len() < self.keep && self.file.is_none() {
            self.kept.push(n);
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(super::spill::temp_file()?);
            for k in std::mem::take(&mut self.kept) {
                self.encode(&k)?;
            }
        }
        self.encode(&n)
    }

    /// A record: inode, type, whether a directory, path length, path.
    fn encode(&mut self, n: &Name) -> io::Result<()> {
        let t = (0u8..)
            .zip(FileType::ALL)
            .find(|(_, x)| x.name() == n.file_type)
            .map_or(8, |(i, _)| i);
        self.buf.extend_from_slice(&n.ino.to_le_bytes());
        self.buf.push(t);
        self.buf.push(u8::from(n.dir));
        self.buf
            .extend_from_slice(&u64_of(n.path.len()).to_le_bytes());
        self.buf.extend_from_slice(&n.path);
        if self.buf.len() >= IO_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.write_all_at(&self.buf, self.end)?;
            self.end = self.end.saturating_add(u64_of(self.buf.len()));
        }
        self.buf.clear();
        Ok(())
    }

    /// Calls `each` with every name, in the order pushed, and its index.
    /// Can be called again.
    ///
    /// # Errors
    /// Reading the temporary file; what `each` returns.
    pub(super) fn for_each<E: From<io::Error>>(
        &mut self,
        each: &mut dyn FnMut(u64, Name) -> Result<(), E>,
    ) -> Result<(), E> {
        self.flush()?;
        let mut at = 0u64;
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0usize;
        let mut index = 0u64;
        if let Some(f) = &self.file {
            loop {
                // A whole record in `buf[pos..]`, or the end.
                let rec = record(buf.get(pos..).unwrap_or_default());
                let (n, used) = match rec {
                    Some(r) => r,
                    None if at >= self.end => {
                        if pos < buf.len() {
                            return Err(bad().into());
                        }
                        break;
                    }
                    None => {
                        buf.drain(..pos.min(buf.len()));
                        pos = 0;
                        let want = us(self.end.saturating_sub(at)).min(IO_CHUNK);
                        let old = buf.len();
                        buf.resize(old.saturating_add(want), 0);
                        f.read_exact_at(buf.get_mut(old..).unwrap_or_default(), at)?;
                        at = at.saturating_add(u64_of(want));
                        continue;
                    }
                };
                pos = pos.saturating_add(used);
                each(index, n)?;
                index = index.saturating_add(1);
            }
        }
        for n in &self.kept {
            each(index, n.clone())?;
            index = index.saturating_add(1);
        }
        Ok(())
    }
}

/// The record at the start of `b` and its length, if `b` holds all of it.
fn record(b: &[u8]) -> Option<(Name, usize)> {
    let ino = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let t = *b.get(8)?;
    let dir = *b.get(9)? != 0;
    let len = us(u64::from_le_bytes(b.get(10..18)?.try_into().ok()?));
    let end = len.checked_add(18)?;
    let path = b.get(18..end)?.to_vec();
    let file_type = FileType::ALL
        .get(usize::from(t))
        .map_or(UNKNOWN, |f| f.name());
    Some((
        Name {
            path,
            ino,
            dir,
            file_type,
        },
        end,
    ))
}

fn bad() -> io::Error {
    io::Error::other("a damaged name record in the temporary file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: u64) -> Name {
        Name {
            path: format!("/new/d{}/f{i}", i % 7).into_bytes(),
            ino: 1000 + i,
            dir: i % 5 == 0,
            file_type: FileType::ALL
                .get((i % 9) as usize)
                .map_or(UNKNOWN, |f| f.name()),
        }
    }

    /// Names read back are those pushed, in order, whether they stayed in
    /// memory or went to the file (records across read chunks), twice.
    #[test]
    fn names_come_back_in_order() {
        for keep in [1, 10, 100_000] {
            let mut s = NameSpill::new(keep);
            for i in 0..20_000 {
                s.push(name(i)).unwrap();
            }
            assert_eq!(s.len(), 20_000);
            for _ in 0..2 {
                let mut got = Vec::new();
                s.for_each::<io::Error>(&mut |k, n| {
                    got.push((k, n.path, n.ino, n.dir, n.file_type));
                    Ok(())
                })
                .unwrap();
                let want: Vec<_> = (0..20_000)
                    .map(|i| {
                        let n = name(i);
                        (i, n.path, n.ino, n.dir, n.file_type)
                    })
                    .collect();
                assert_eq!(got, want, "keep {keep}");
            }
        }
    }
}
