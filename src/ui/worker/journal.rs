//! The worker's word on an ext journal that needed recovery (a live
//! snapshot): what the replay in memory did, or that recovery is pending.
use crate::fs::ext::jbd2::replay::ReplayInfo;
use crate::fs::ext::Ext4;
use crate::ui::msg::JournalNote;

/// What the panes say of an ext journal that needed recovery: what the
/// replay did, or (with `--no-replay`, or when it could not be made) that
/// recovery is pending. `None` for a clean filesystem.
pub(super) fn note(fs: &Ext4, no_replay: bool) -> Option<JournalNote> {
    use crate::fs::ext::superblock::Incompat;
    if let Some(info) = fs.replay_info() {
        let replayed = fs.replayed().is_some();
        let mut text = info.summary();
        if !replayed && info.transactions == 0 {
            return None;
        }
        if replayed {
            text.push_str(" (--no-replay for the on-disk view)");
        }
        return Some(JournalNote {
            text: crate::escape::printable(&text),
            replayed,
        });
    }
    if let Some(why) = fs.replay_failed() {
        return Some(JournalNote {
            text: crate::escape::printable(&format!(
                "recovery pending: the journal cannot be replayed ({why}); showing the disk as it is"
            )),
            replayed: false,
        });
    }
    if !no_replay || !fs.superblock().has_incompat(Incompat::NEEDS_RECOVERY) {
        return None;
    }
    // --no-replay: what the kernel's recovery would replay.
    let what = match fs.journal_log(None) {
        Ok(Some(j)) => {
            let info = ReplayInfo::of(&fs.recover(&j));
            format!(
                ": {} transaction(s), {} block(s) not replayed",
                info.transactions, info.blocks
            )
        }
        _ => String::new(),
    };
    Some(JournalNote {
        text: crate::escape::printable(&format!(
            "recovery pending{what} (--no-replay: the disk as it is)"
        )),
        replayed: false,
    })
}
