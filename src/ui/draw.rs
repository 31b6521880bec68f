//! Drawing: a pure function of the [`App`] state into a ratatui frame.
//! The same code draws the real terminal and the headless frames of
//! `layerscope render` and snapshot tests. Each pane draws itself into
//! the area [`super::layout`] gives it; this module adds the tab line,
//! the key bar and the help.
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::app::{App, PromptKind};
use super::context::OpenState;
use super::hex::Palette;
use super::keys::{bar, KEYS};
use super::layout::{areas, mode, tabs, Mode};
use super::panes::DrawCx;
use super::style::Styles;
use super::text::{self, fit};

/// Draws the whole app.
pub fn draw(f: &mut Frame, app: &App, palette: Palette) {
    let cx = DrawCx {
        shared: &app.shared,
        styles: Styles { palette },
    };
    let a = areas(&app.shared);
    if app.shared.open != OpenState::Open {
        draw_opening(f, app, &cx.styles);
        draw_bar(f, a.bar, app, &cx.styles);
        return;
    }
    if let Some(r) = a.tabs {
        draw_tabs(f, r, app);
    }
    if let Some(r) = a.chain {
        app.chain.draw(f, r, cx);
    }
    if let Some(r) = a.status {
        app.status.draw(f, r, cx);
    }
    if let Some(r) = a.tree {
        if app.changes.show {
            app.changes.draw_list(f, r, cx);
        } else {
            let changes = app.changes.rows_for(app.shared.as_of);
            app.tree.draw(f, r, cx, changes);
        }
    }
    if let Some(r) = a.superblock {
        app.superblock.draw(f, r, cx);
    }
    if let Some(r) = a.volumes {
        app.volumes.draw(f, r, cx);
    }
    if let Some(r) = a.groups {
        let fs_error = match &app.shared.fs {
            super::context::FsState::Missing(e) => Some(e.as_str()),
            _ => None,
        };
        app.groups.draw(f, r, cx, fs_error);
    }
    if let Some(r) = a.hex {
        if app.changes.comparing() {
            app.changes.draw_compare(f, r, cx);
        } else {
            app.hex.draw(f, r, cx);
        }
    }
    if let Some(r) = a.hitmap {
        app.hitmap.draw(f, r, cx);
    }
    draw_bar(f, a.bar, app, &cx.styles);
    if app.help {
        draw_help(f, Rect::new(0, 0, app.shared.width, app.shared.height));
    }
}

/// Before the chain is open: what the UI waits for, or why it gave up.
fn draw_opening(f: &mut Frame, app: &App, st: &Styles) {
    let s = &app.shared;
    let r = Rect::new(0, 0, s.width, s.height.saturating_sub(1));
    let (text, style) = match &s.open {
        OpenState::Failed(e) => (
            format!("cannot open {}: {e}\n\nq quits", s.title),
            st.error(),
        ),
        _ if s.is_nbd => (
            format!("connecting to {}…\n\nq quits", s.title),
            Style::default(),
        ),
        _ => (format!("opening {}…\n\nq quits", s.title), Style::default()),
    };
    f.render_widget(
        Paragraph::new(text)
            .style(style)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title("layerscope")),
        r,
    );
}

/// The tab strip: every pane, the focused one reversed, those not on
/// screen dimmed; a digit or a click brings one in.
fn draw_tabs(f: &mut Frame, r: Rect, app: &App) {
    let on_screen = areas(&app.shared);
    let mut spans = Vec::new();
    for (p, label, _, _) in tabs(r.width) {
        let style = if p == app.shared.focus {
            Style::default().add_modifier(Modifier::REVERSED)
        } else if on_screen.of(p).is_none() {
            Style::default().add_modifier(Modifier::DIM)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        spans.push(Span::styled(label, style));
    }
    // In the medium layout some panes share a place: say which are not
    // on screen (dimming alone is lost without attributes).
    if mode(&app.shared) == Mode::Medium {
        let strip = tabs(r.width);
        let hidden: Vec<String> = strip
            .iter()
            .enumerate()
            .filter(|(_, t)| on_screen.of(t.0).is_none())
            .map(|(i, _)| i.saturating_add(1).to_string())
            .collect();
        let used = strip.last().map_or(0, |t| t.3);
        let hint = format!("  ({} not shown: a digit shows one)", hidden.join(", "));
        if !hidden.is_empty()
            && usize::from(used).saturating_add(text::width(&hint)) <= usize::from(r.width)
        {
            spans.push(Span::styled(
                hint,
                Style::default().add_modifier(Modifier::DIM),
            ));
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), r);
}

/// The key bar: the prompt while one is open, else the message (until the
/// next key; errors in their own style), else the main keys and the
/// image's name.
fn draw_bar(f: &mut Frame, r: Rect, app: &App, st: &Styles) {
    let width = usize::from(r.width);
    let reversed = Style::default().add_modifier(Modifier::REVERSED);
    let (text, style) = match (&app.prompt, &app.message) {
        (Some(p), _) if p.kind == PromptKind::Search => {
            (format!(" search names in the tree: {}▏", p.text), reversed)
        }
        (Some(p), _) => (
            format!(" go to (0x.., 64K, b<block>, i<inode>): {}▏", p.text),
            reversed,
        ),
        (None, Some(m)) if m.error => (format!(" ✗ {}", m.text), st.error().patch(reversed)),
        (None, Some(m)) => (format!(" {}", m.text), reversed),
        (None, None) => {
            let keys: Vec<String> = bar().iter().map(|(k, w)| format!("{k} {w}")).collect();
            (
                format!(" {}  │ {}", keys.join("  "), app.shared.title),
                reversed,
            )
        }
    };
    // A message longer than the bar is cut with a mark.
    let text = if text::width(&text) > width && app.prompt.is_none() {
        fit(&text, width)
    } else {
        text
    };
    f.render_widget(Paragraph::new(Line::from(text)).style(style), r);
}

fn draw_help(f: &mut Frame, full: Rect) {
    let w = 78.min(full.width);
    // Each text wrapped at words beside its key column.
    let room = usize::from(w.saturating_sub(2 + 19)).max(10);
    let mut lines: Vec<Line> = Vec::new();
    for b in KEYS {
        let mut line = String::new();
        let mut key = b.names;
        for word in b.help.split(' ') {
            let len = line.chars().count().saturating_add(1);
            if !line.is_empty() && len.saturating_add(word.chars().count()) > room {
                lines.push(Line::from(format!("{key:<18} {line}")));
                key = "";
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(Line::from(format!("{key:<18} {line}")));
    }
    let h = u16::try_from(lines.len().saturating_add(2))
        .unwrap_or(u16::MAX)
        .min(full.height);
    let r = Rect::new(
        full.width.saturating_sub(w) / 2,
        full.height.saturating_sub(h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("Keys")),
        r,
    );
}
