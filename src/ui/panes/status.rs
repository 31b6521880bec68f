//! The Status pane: local files, or the live NBD connection: its state,
//! what the server said of the export (size, flags, block sizes, metadata
//! contexts), how many layers its chain has (from `qemu:allocation-depth`;
//! without it, a warning that they cannot be told apart), traffic,
//! latency and errors; or the ssh session an `ssh://` chain is read
//! through: host, transport, the same counters.
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::DrawCx;
use crate::block::nbd::proto::TFLAG_NAMES;
use crate::block::nbd::status::{ConnState, StatsSnapshot};
use crate::block::nbd::ExportInfo;
use crate::block::ssh::SshStatus;
use crate::ui::action::Pane;
use crate::ui::msg::{JournalNote, ServerLayers};
use crate::ui::style::pane_block;
use crate::units::human;

/// The status pane's state: the last NBD status the worker sent, and what
/// the scan of the server's allocation depths found.
#[derive(Clone, Debug, Default)]
pub struct StatusPane {
    pub nbd: Option<Box<(ExportInfo, StatsSnapshot)>>,
    pub ssh: Option<Box<SshStatus>>,
    pub server: Option<ServerLayers>,
    /// The journal of the filesystem in view, when it needed recovery.
    pub journal: Option<JournalNote>,
}

/// The warning shown when a server gives no allocation depths.
pub const NO_DEPTHS: &str =
    "⚠ no qemu:allocation-depth: the server's layers cannot be told apart (qemu-nbd -A shows them)";

impl StatusPane {
    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let mut lines = Vec::new();
        match &self.nbd {
            Some(n) => self.nbd_lines(&n.0, &n.1, cx, &mut lines),
            None if cx.shared.is_nbd => lines.push(Line::from("connecting…")),
            None if cx.shared.is_ssh => match &self.ssh {
                Some(st) => ssh_lines(st, cx, &mut lines),
                None => lines.push(Line::from("ssh: asking the session…")),
            },
            None => {
                lines.push(Line::from("local files (no NBD connection)"));
                lines.push(Line::from(format!("disk as of layer {}", cx.shared.as_of)));
            }
        }
        if let Some(j) = &self.journal {
            lines.push(journal_line(j, cx));
        }
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(pane_block("Status".into(), cx.focused(Pane::Status), r)),
            r,
        );
    }

    fn nbd_lines(
        &self,
        info: &ExportInfo,
        st: &StatsSnapshot,
        cx: DrawCx,
        lines: &mut Vec<Line<'static>>,
    ) {
        let esc = crate::escape::printable;
        lines.push(Line::from(format!(
            "{:?}  export {:?}",
            st.state,
            esc(&info.name)
        )));
        lines.push(Line::from(format!(
            "size {} ({} bytes)  {}",
            human(info.size),
            info.size,
            info.handshake
        )));
        let flags: Vec<&str> = TFLAG_NAMES
            .iter()
            .filter(|(b, _)| info.flags & b != 0)
            .map(|(_, n)| *n)
            .collect();
        lines.push(Line::from(format!(
            "flags {:#06x} {}",
            info.flags,
            flags.join(" ")
        )));
        let b = |v: Option<u32>| v.map_or("-".to_owned(), |v| human(u64::from(v)));
        lines.push(Line::from(format!(
            "blocks min {} preferred {} max {}",
            b(info.block_min),
            b(info.block_preferred),
            b(info.block_max)
        )));
        let ctx: Vec<&str> = info.meta_contexts.iter().map(|(_, n)| n.as_str()).collect();
        lines.push(Line::from(format!("contexts {}", esc(&ctx.join(" ")))));
        if info.context("qemu:allocation-depth").is_none() {
            lines.push(Line::styled(NO_DEPTHS, cx.styles.error()));
        } else if let Some(s) = self.server {
            lines.push(Line::from(format!(
                "server chain: {} layer{}{} (layer 0 the base, depth 1 the top)",
                s.layers,
                if s.layers == 1 { "" } else { "s" },
                if s.complete { "" } else { " at least" }
            )));
        }
        traffic_lines(st, cx, lines);
    }
}

/// The journal's line: what was replayed in memory, or (in the error
/// style) that recovery is pending.
pub fn journal_line(j: &JournalNote, cx: DrawCx) -> Line<'static> {
    if j.replayed {
        Line::from(j.text.clone())
    } else {
        Line::styled(j.text.clone(), cx.styles.error())
    }
}

/// An ssh session: its state and host, the transport, then the traffic.
fn ssh_lines(ss: &SshStatus, cx: DrawCx, lines: &mut Vec<Line<'static>>) {
    let st = &ss.stats;
    let state = format!(
        "{:?}  ssh://{}",
        st.state,
        crate::escape::printable(&ss.host)
    );
    lines.push(if st.state == ConnState::Ready {
        Line::from(state)
    } else {
        Line::styled(state, cx.styles.error())
    });
    lines.push(Line::from(format!(
        "transport ssh + SFTP v3, files read-only, reads of {}",
        human(u64::from(ss.read_size))
    )));
    lines.push(Line::from(format!("top {}", cx.shared.title)));
    traffic_lines(st, cx, lines);
}

/// Bytes, requests in flight, latency, errors and reconnects, the last
/// error: the counters NBD and ssh share.
fn traffic_lines(st: &StatsSnapshot, cx: DrawCx, lines: &mut Vec<Line<'static>>) {
    lines.push(Line::from(format!(
        "read {}  {} requests, {} in flight",
        human(st.bytes_read),
        st.requests,
        st.in_flight
    )));
    let ms =
        |v: Option<u32>| v.map_or("-".into(), |us| format!("{:.2} ms", f64::from(us) / 1000.0));
    lines.push(Line::from(format!(
        "latency p50 {} p99 {}",
        ms(st.latency_p50_us),
        ms(st.latency_p99_us)
    )));
    lines.push(Line::from(format!(
        "errors {}  reconnects {}",
        st.errors, st.reconnects
    )));
    if let Some(e) = &st.last_error {
        lines.push(Line::styled(
            format!("last error: {}", crate::escape::printable(e)),
            cx.styles.error(),
        ));
    }
}
