//! `g`, "go to": a disk offset (`0x400`, `4096`, `64K`), a filesystem
//! block (`b<N>`, of the filesystem's block size, 4 KiB without one), or an
//! inode (`i<N>` or `<N>`, as debugfs writes it): the hex view goes to the
//! inode's slot in its table with the inode's fields marked. Opening a
//! directory in the tree shows its first block the same way, each entry's
//! fields marked.

/// What a "go to" text names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Offset(u64),
    Block(u64),
    Inode(u64),
}

/// Parses what was typed at the prompt.
pub fn parse(text: &str) -> Result<Target, String> {
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
