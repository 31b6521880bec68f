//! The TUI on kernel-written live snapshots: the Status and Superblock
//! panes say what the journal replay did (or that recovery is pending
//! with `--no-replay`), and the hit map shows the replayed blocks as
//! served by "journal of layer L". The counts are `journal --json`'s
//! (itself checked against `debugfs logdump -a` in `replay`), the flag
//! debugfs's.
use super::{live, Live};
use crate::util::*;

fn abs(l: &Live, image: &str) -> String {
    l.dir.join(image).to_str().unwrap().to_owned()
}

fn frame(dir: &std::path::Path, image: &str, extra: &[&str]) -> String {
    let mut args = vec!["render", image, "--size", "200x60"];
    args.extend_from_slice(extra);
    layerscope(dir, &args).ok().text()
}

/// debugfs's feature list of a flattened copy (`stats`).
fn features(dir: &std::path::Path, flat: &std::path::Path) -> String {
    let out = sh(dir, &["debugfs", "-R", "stats", flat.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default()
        .to_owned()
}

/// The left column of a 200x60 frame (chain, status, volumes,
/// superblock) as one line of words: text the panes wrap reads whole.
fn left_column(frame: &str) -> String {
    let first = frame.lines().next().unwrap_or_default();
    let w = first.chars().position(|c| c == '┐').unwrap_or(0);
    let text: Vec<String> = frame
        .lines()
        .map(|l| l.chars().take(w).skip(1).collect::<String>())
        .collect();
    text.join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn tui_shows_the_replayed_journal() {
    let Some(l) = live() else { return };
    let d = tempfile::tempdir().unwrap();
    let image = abs(l, &l.main[2]);
    let j = layerscope(d.path(), &["journal", "--json", &image])
        .ok()
        .json();
    let (t, b) = (
        j["recovery"]["transactions_replayed"].as_u64().unwrap(),
        j["recovery"]["blocks_replayed"].as_u64().unwrap(),
    );
    assert!(t > 0 && b > 0, "layer 2 was snapshotted dirty: {j}");
    // On disk the flag is set; e2fsck's replay clears it.
    assert!(features(d.path(), &l.flat(&l.main[2], false)).contains("needs_recovery"));
    assert!(!features(d.path(), &l.flat(&l.main[2], true)).contains("needs_recovery"));

    let f = frame(d.path(), &image, &[]);
    let left = left_column(&f);
    let note = format!("journal replayed in memory: {t} transaction(s), {b} block(s)");
    // The Status pane, and the Superblock pane with the flag.
    assert_eq!(left.matches(&note).count(), 2, "{note}\n{f}");
    assert!(left.contains(&format!("needs_recovery: {note}")), "{f}");
    assert!(!f.contains("pending"), "{f}");
    // The kernel wrote the journal while layer 2 was the top: every copy
    // replayed is in layer 2's clusters (as the layered reader records
    // them, replay::hit_map_says_journal_of_layer).
    let legend = format!("▒journal of layer 2:{}", layerscope::units::human(b * 4096));
    assert!(f.contains(&legend), "{legend}\n{f}");

    let f = frame(d.path(), &image, &["--no-replay"]);
    let left = left_column(&f);
    let pending = format!("recovery pending: {t} transaction(s), {b} block(s) not replayed");
    assert_eq!(left.matches(&pending).count(), 2, "{pending}\n{f}");
    assert!(left.contains(&format!("needs_recovery: {pending}")), "{f}");
    assert!(!f.contains("journal of layer") && !f.contains('▒'), "{f}");
    assert!(!f.contains("replayed in memory"), "{f}");

    // A clean layer says nothing of its journal.
    let f = frame(d.path(), &abs(l, &l.main[3]), &[]);
    assert!(
        !f.contains("journal replayed") && !f.contains("recovery") && !f.contains('▒'),
        "{f}"
    );
}
