//! `g`, "go to": a disk offset (`0x400`, `4096`, `64K`), a filesystem
//! block (`b<N>`, of the filesystem's block size, 4 KiB without one), or an
//! inode (`i<N>` or `<N>`, as debugfs writes it): the hex view goes to the
//! inode's slot in its table with the inode's fields marked. Opening a
//! directory in the tree shows its first block the same way, each entry's
//! fields marked.
use super::app::{App, Highlight, Pane, Request};

/// A structure for the hex view: where it is and its fields (from the
/// decoder's field table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Structure {
    pub as_of: usize,
    /// What it is, for the hex pane's title (escaped).
    pub label: String,
    /// Where to show it from.
    pub at: u64,
    /// (disk offset, size) of each field.
    pub fields: Vec<(u64, usize)>,
    /// Move the focus to the hex view (a `g`, not a tree step).
    pub focus: bool,
}

/// What a "go to" text names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Offset(u64),
    Block(u64),
    Inode(u64),
}

fn parse(text: &str) -> Result<Target, String> {
    let t = text.trim();
    let number = |s: &str| crate::units::parse_size(s.trim());
    if let Some(n) = t.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
        return number(n).map(Target::Inode);
    }
    if let Some(n) = t.strip_prefix('i') {
        return number(n).map(Target::Inode);
    }
    if let Some(n) = t.strip_prefix('b') {
        return number(n).map(Target::Block);
    }
    number(t).map(Target::Offset)
}

impl App {
    /// Goes to what `text` names (see the module doc).
    pub(super) fn goto(&mut self, text: &str) -> Vec<Request> {
        let off = match parse(text) {
            Err(e) => {
                self.message = Some(e);
                return Vec::new();
            }
            Ok(Target::Inode(ino)) => {
                if !matches!(self.sb, Some(Ok(_))) {
                    self.message = Some("no filesystem: no inodes to go to".into());
                    return Vec::new();
                }
                return vec![Request::Inode {
                    as_of: self.as_of,
                    ino,
                }];
            }
            Ok(Target::Block(b)) => b.saturating_mul(self.block_size.unwrap_or(4096)),
            Ok(Target::Offset(o)) => o,
        };
        if off >= self.disk_size {
            self.message = Some(format!(
                "{off:#x} is past the end of the disk ({:#x})",
                self.disk_size
            ));
            return Vec::new();
        }
        self.hex_offset = (off & !15).min(self.max_offset());
        self.focus = Pane::Hex;
        self.refresh().into_iter().take(1).collect()
    }

    /// A structure from the worker: the hex view shows it from its start,
    /// its fields marked.
    pub(super) fn receive_structure(&mut self, st: Structure) -> Vec<Request> {
        if st.focus {
            self.focus = Pane::Hex;
        }
        self.hex_offset = (st.at & !15).min(self.max_offset());
        self.hex = None;
        let mut r = self.show_highlight(Highlight {
            label: st.label,
            fields: st.fields,
            selected: None,
        });
        if r.is_empty() {
            r = self.refresh().into_iter().take(1).collect();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse("<12>"), Ok(Target::Inode(12)));
        assert_eq!(parse("i12"), Ok(Target::Inode(12)));
        assert_eq!(parse("b3"), Ok(Target::Block(3)));
        assert_eq!(parse("0x400"), Ok(Target::Offset(0x400)));
        assert!(parse("<12").is_err());
    }
}
