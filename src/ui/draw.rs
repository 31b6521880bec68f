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

use super::action::Pane;
use super::app::{App, PromptKind};
use super::hex::Palette;
use super::keys::{bar, KEYS};
use super::layout::areas;
use super::panes::DrawCx;
use super::style::Styles;

/// Draws the whole app.
pub fn draw(f: &mut Frame, app: &App, palette: Palette) {
    let cx = DrawCx {
        shared: &app.shared,
        styles: Styles { palette },
    };
    let a = areas(&app.shared);
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
    draw_bar(f, a.bar, app);
    if app.help {
        draw_help(f, Rect::new(0, 0, app.shared.width, app.shared.height));
    }
}

fn draw_tabs(f: &mut Frame, r: Rect, app: &App) {
    let mut spans = Vec::new();
    for p in Pane::ORDER {
        let style = if p == app.shared.focus {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        spans.push(Span::styled(format!(" {} ", p.name()), style));
        spans.push(Span::raw(" "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), r);
}

fn draw_bar(f: &mut Frame, r: Rect, app: &App) {
    let text = match (&app.prompt, &app.message) {
        (Some(p), _) if p.kind == PromptKind::Search => {
            format!(" search names in the tree: {}▏", p.text)
        }
        (Some(p), _) => format!(" go to (0x.., 64K, b<block>, i<inode>): {}▏", p.text),
        (None, Some(m)) => format!(" {m}"),
        (None, None) => {
            let keys: Vec<String> = bar().iter().map(|(k, w)| format!("{k} {w}")).collect();
            format!(" {}  │ {}", keys.join("  "), app.shared.title)
        }
    };
    f.render_widget(
        Paragraph::new(Line::from(text)).style(Style::default().add_modifier(Modifier::REVERSED)),
        r,
    );
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
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
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
    let h = u16::try_from(lines.len() + 2)
        .unwrap_or(u16::MAX)
        .min(full.height);
    let r = Rect::new((full.width - w) / 2, (full.height - h) / 2, w, h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("Keys")),
        r,
    );
}
