//! JSON output. Every `--json` goes through here: the one place where
//! the policy for strings from the disk in JSON applies (see
//! [`crate::escape`]), and where long lists are written as they are
//! produced instead of being built in memory first.
//!
//! Strings keep the real names: a name that is UTF-8 is its exact text
//! (JSON escapes what it must); a name that is not is shown escaped
//! (`\xNN` for the bytes that are not UTF-8) with a `…_bytes` field next
//! to it holding the raw bytes in hex, so nothing is lost.
use std::cell::RefCell;
use std::io::Write;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// A pretty serializer under the escaping policy.
fn pretty(
    out: &mut dyn Write,
) -> serde_json::Serializer<
    &mut dyn Write,
    crate::escape::json::Escaping<serde_json::ser::PrettyFormatter<'static>>,
> {
    serde_json::Serializer::with_formatter(
        out,
        crate::escape::json::Escaping(serde_json::ser::PrettyFormatter::new()),
    )
}

/// Writes `v` pretty-printed, and a newline.
///
/// # Errors
/// Write errors.
pub fn write(out: &mut dyn Write, v: &impl Serialize) -> anyhow::Result<()> {
    crate::escape::json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Writes the items of `items` as a JSON array, each serialized as it
/// comes (nothing is collected).
///
/// # Errors
/// Write errors.
pub fn write_seq<I>(out: &mut dyn Write, items: I) -> anyhow::Result<()>
where
    I: Iterator,
    I::Item: Serialize,
{
    let mut ser = pretty(&mut *out);
    ser.collect_seq(items)?;
    Ok(())
}

/// An object of `fields` (in order) whose last member, `key`, is the
/// array of `items`, streamed.
///
/// # Errors
/// Write errors.
pub fn write_object_with_seq<I>(
    out: &mut dyn Write,
    fields: Vec<(String, serde_json::Value)>,
    key: &str,
    items: I,
) -> anyhow::Result<()>
where
    I: Iterator,
    I::Item: Serialize,
{
    /// Serializes an iterator once (serde's `Serialize` takes `&self`).
    struct Once<I>(RefCell<Option<I>>);
    impl<I> Serialize for Once<I>
    where
        I: Iterator,
        I::Item: Serialize,
    {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.borrow_mut().take().into_iter().flatten())
        }
    }
    let mut ser = pretty(&mut *out);
    let mut m = ser.serialize_map(None)?;
    for (k, v) in &fields {
        m.serialize_entry(k, v)?;
    }
    m.serialize_entry(key, &Once(RefCell::new(Some(items))))?;
    SerializeMap::end(m)?;
    writeln!(out)?;
    Ok(())
}

/// Raw bytes from the disk as a JSON string: the exact text when they
/// are UTF-8, else escaped (see [`hex_unless_utf8`] for the bytes).
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => crate::escape::printable_bytes(bytes),
    }
}

/// The bytes in hex when they are not UTF-8 (the `…_bytes` field beside
/// [`text`]), else `None`.
pub fn hex_unless_utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .is_err()
        .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Sets `key` in the object `v` (as `v[key] = value`, which clippy's
/// indexing lint cannot tell from a panicking index); `v` not an object
/// (never, for the `json!({..})` callers) is left as it is.
pub fn set(v: &mut serde_json::Value, key: &str, value: impl Into<serde_json::Value>) {
    if let serde_json::Value::Object(m) = v {
        m.insert(key.to_owned(), value.into());
    }
}

/// One value written compact on its own line inside a hand-written
/// array (`ls -R --json` writes entries as it lists them).
///
/// # Errors
/// Write errors.
pub fn write_item(out: &mut dyn Write, first: &mut bool, v: &impl Serialize) -> anyhow::Result<()> {
    out.write_all(if *first { b"\n  " } else { b",\n  " })?;
    *first = false;
    crate::escape::json::to_writer(&mut *out, v)?;
    Ok(())
}
