//! The Status pane: local files, or the live NBD connection (state,
//! export, contexts, traffic, latency, errors).
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::block::nbd::status::StatsSnapshot;
use crate::block::nbd::ExportInfo;
use crate::ui::action::Pane;
use crate::ui::style::pane_block;
use crate::units::human;

/// The status pane's state: the last NBD status the worker sent.
#[derive(Clone, Debug, Default)]
pub struct StatusPane {
    pub nbd: Option<Box<(ExportInfo, StatsSnapshot)>>,
}

impl StatusPane {
    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let mut lines = Vec::new();
        match &self.nbd {
            Some(n) => {
                let (info, st) = (&n.0, &n.1);
                lines.push(Line::from(format!(
                    "{:?}  export {:?}",
                    st.state,
                    crate::escape::printable(&info.name)
                )));
                lines.push(Line::from(format!(
                    "size {}  {}",
                    human(info.size),
                    info.handshake
                )));
                let ctx: Vec<&str> = info.meta_contexts.iter().map(|(_, n)| n.as_str()).collect();
                lines.push(Line::from(format!(
                    "contexts {}",
                    crate::escape::printable(&ctx.join(" "))
                )));
                lines.push(Line::from(format!(
                    "read {}  {} requests, {} in flight",
                    human(st.bytes_read),
                    st.requests,
                    st.in_flight
                )));
                let ms = |v: Option<u32>| {
                    v.map_or("-".into(), |us| format!("{:.2} ms", f64::from(us) / 1000.0))
                };
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
                    lines.push(Line::from(format!(
                        "last error: {}",
                        crate::escape::printable(e)
                    )));
                }
            }
            None if cx.shared.is_nbd => lines.push(Line::from("connecting…")),
            None => {
                lines.push(Line::from("local files (no NBD connection)"));
                lines.push(Line::from(format!("disk as of layer {}", cx.shared.as_of)));
            }
        }
        f.render_widget(
            Paragraph::new(lines).block(pane_block("Status".into(), cx.focused(Pane::Status))),
            r,
        );
    }
}
