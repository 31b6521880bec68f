//! The terminal UI: panes for the layer chain, the NBD connection, the hex
//! view and the hit map, over one worker thread that does all the I/O.
//!
//! - [`app`]: state and actions (no I/O, no drawing);
//! - [`render`]: drawing, a pure function of the state;
//! - [`worker`]: the readers, on their own thread;
//! - [`hex`]: hexyl's byte classes and the layer colours;
//! - this module: keys to actions, the event loop, and [`render_frame`] for
//!   headless frames (`layerscope render`, snapshot tests).
//!
//! The filesystem panes (superblock, groups, tree) come with the ext
//! decoder.
pub mod app;
pub mod changes;
pub mod goto;
pub mod groups;
pub mod hex;
pub mod log;
pub mod render;
pub mod search;
pub mod timing;
pub mod tree;
pub mod worker;

use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEventKind};
use ratatui::backend::{Backend, TestBackend};
use ratatui::layout::Position;
use ratatui::Terminal;

use app::{Action, App, LayerView, Pane};
use worker::Worker;

use crate::block::chain::Chain;

/// Builds the app state for a chain.
pub fn app_for(chain: &Chain) -> App {
    let layers = chain
        .layers
        .iter()
        .map(|l| {
            let detail = match &l.qcow2 {
                Some(q) => {
                    let h = q.header();
                    format!(
                        "{} {}",
                        crate::units::human(h.cluster_size()),
                        h.compression.name()
                    )
                }
                None => l.info.as_ref().map(|i| i.summary()).unwrap_or_default(),
            };
            let name = l.path.rsplit('/').next().unwrap_or(&l.path);
            LayerView {
                index: l.index,
                name: crate::escape::printable(name),
                format: l.format.name().to_owned(),
                detail,
                size: l.source.len(),
            }
        })
        .collect();
    let top = chain.top();
    let title = top.map_or_else(String::new, |t| crate::escape::printable(&t.path));
    let size = top.map_or(0, |t| t.source.len());
    let is_nbd = top.is_some_and(|t| t.nbd.is_some());
    App::new(title, layers, size, is_nbd)
}

/// The action for a key, given whether a prompt is open.
pub fn key_action(key: KeyEvent, prompt: bool) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if prompt {
        return match key.code {
            KeyCode::Char(c) => Some(Action::Char(c)),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Enter => Some(Action::Enter),
            KeyCode::Esc => Some(Action::Back),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Tab => Action::NextPane,
        KeyCode::BackTab => Action::PrevPane,
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::PageDown | KeyCode::Char(' ') => Action::PageDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::Home => Action::Top,
        KeyCode::End => Action::Bottom,
        KeyCode::Enter => Action::Enter,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('g') => Action::Goto,
        KeyCode::Char('/') => Action::Search,
        KeyCode::Char('n') => Action::NextMatch,
        KeyCode::Char('m') => Action::ToggleHitMode,
        KeyCode::Char('d') => Action::Diff,
        _ => return None,
    })
}

/// Parses a key script: space-separated names (`Enter`, `Tab`, `BackTab`,
/// `Esc`, `Up`, `Down`, `PageUp`, `PageDown`, `Home`, `End`, `Space`,
/// `Backspace`, `C-c`) or text, typed one character at a time.
pub fn parse_keys(script: &str) -> Vec<KeyEvent> {
    let mut keys = Vec::new();
    for word in script.split_whitespace() {
        let code = match word {
            "Enter" => Some(KeyCode::Enter),
            "Tab" => Some(KeyCode::Tab),
            "BackTab" | "S-Tab" => Some(KeyCode::BackTab),
            "Esc" => Some(KeyCode::Esc),
            "Up" => Some(KeyCode::Up),
            "Down" => Some(KeyCode::Down),
            "PageUp" => Some(KeyCode::PageUp),
            "PageDown" => Some(KeyCode::PageDown),
            "Home" => Some(KeyCode::Home),
            "End" => Some(KeyCode::End),
            "Space" => Some(KeyCode::Char(' ')),
            "Backspace" => Some(KeyCode::Backspace),
            "C-c" => {
                keys.push(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
                None
            }
            text => {
                keys.extend(
                    text.chars()
                        .map(|c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
                );
                None
            }
        };
        if let Some(c) = code {
            keys.push(KeyEvent::new(c, KeyModifiers::NONE));
        }
    }
    keys
}

/// Runs `keys` against the app with the worker inline (deterministic: each
/// request is answered before the next key) and returns the final frame as
/// text, one line per row; `ansi` keeps colours as escape sequences.
///
/// This is the library side of `layerscope render`: users can
/// `insta::assert_snapshot!(render_frame(...))` in their own tests.
pub fn render_frame(chain: Chain, width: u16, height: u16, keys: &str, ansi: bool) -> String {
    let mut app = app_for(&chain);
    let mut worker = Worker::new(chain);
    let mut serve = |app: &mut App, requests: Vec<app::Request>| {
        // Follow-up requests (a file's bytes after its location) too,
        // bounded in case of a loop.
        let mut queue: std::collections::VecDeque<app::Request> = requests.into();
        let mut budget = 64;
        while let Some(r) = queue.pop_front() {
            budget -= 1;
            if budget == 0 {
                break;
            }
            let reply = worker.handle(r);
            queue.extend(app.receive(reply));
        }
    };
    let first = app.apply(Action::Resize(width, height));
    serve(&mut app, first);
    for key in parse_keys(keys) {
        if app.quit {
            break;
        }
        if let Some(a) = key_action(key, app.prompt.is_some()) {
            let requests = app.apply(a);
            serve(&mut app, requests);
        }
    }
    let mut terminal = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(e) => return format!("cannot draw: {e}"),
    };
    // Text frames carry the 16 ANSI colours at most.
    let palette = if ansi {
        hex::Palette::Ansi16
    } else {
        hex::Palette::None
    };
    if let Err(e) = terminal.draw(|f| render::draw(f, &app, palette)) {
        return format!("cannot draw: {e}");
    }
    buffer_text(terminal.backend().buffer(), ansi)
}

/// A buffer as text (trailing spaces trimmed), optionally with ANSI colours.
fn buffer_text(buf: &ratatui::buffer::Buffer, ansi: bool) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        let mut last = None;
        for x in 0..buf.area.width {
            let cell = &buf[(x, y)];
            if ansi && last != Some((cell.fg, cell.modifier)) {
                line.push_str(&ansi_style(cell.fg, cell.modifier));
                last = Some((cell.fg, cell.modifier));
            }
            line.push_str(cell.symbol());
        }
        if ansi {
            line.push_str("\x1b[0m");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// SGR codes for a colour and the modifiers the UI uses (bold, underline,
/// reverse), after a reset.
fn ansi_style(c: ratatui::style::Color, m: ratatui::style::Modifier) -> String {
    use ratatui::style::Color::*;
    use ratatui::style::Modifier;
    let code = match c {
        Black => 30,
        Red => 31,
        Green => 32,
        Yellow => 33,
        Blue => 34,
        Magenta => 35,
        Cyan => 36,
        Gray | White => 37,
        DarkGray => 90,
        LightRed => 91,
        LightGreen => 92,
        LightYellow => 93,
        LightBlue => 94,
        LightMagenta => 95,
        LightCyan => 96,
        _ => 39,
    };
    let mut sgr = format!("\x1b[0;{code}");
    for (bit, n) in [
        (Modifier::BOLD, ";1"),
        (Modifier::UNDERLINED, ";4"),
        (Modifier::REVERSED, ";7"),
    ] {
        if m.contains(bit) {
            sgr.push_str(n);
        }
    }
    sgr.push('m');
    sgr
}

/// Restores the terminal: raw mode off, main screen back, mouse released.
fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        io::stdout(),
        crossterm::event::DisableMouseCapture,
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Opens the interactive UI on the terminal for `chain`.
///
/// # Errors
/// Terminal errors. The terminal is restored on return, on error and on
/// panic.
pub fn run(chain: Chain) -> io::Result<()> {
    let palette = hex::Palette::from_env();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(
        io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::event::EnableMouseCapture
    )?;
    let result = (|| {
        let mut terminal = Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))?;
        run_loop(&mut terminal, chain, palette)
    })();
    restore();
    result
}

/// The event loop, generic over the backend so tests can drive it.
///
/// # Errors
/// Terminal errors.
pub fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    chain: Chain,
    palette: hex::Palette,
) -> io::Result<()>
where
    B::Error: Into<io::Error>,
{
    let mut app = app_for(&chain);
    tracing::info!(image = %app.title, size = app.disk_size, layers = app.layers.len(), ?palette, "UI started");
    let worker = Worker::new(chain);
    let cancel = worker.search_cancel();
    let (tx, rx) = worker::spawn(worker);
    let size = terminal.size().map_err(Into::into)?;
    for r in app.apply(Action::Resize(size.width, size.height)) {
        let _ = tx.send(r);
    }
    let mut last_tick = Instant::now();
    while !app.quit {
        terminal
            .draw(|f| render::draw(f, &app, palette))
            .map_err(Into::into)?;
        // Never block on I/O: wait for input briefly, then take whatever
        // the worker has finished.
        if event::poll(Duration::from_millis(50))? {
            let action = match event::read()? {
                Event::Key(k) if k.kind != event::KeyEventKind::Release => {
                    key_action(k, app.prompt.is_some())
                }
                Event::Resize(w, h) => Some(Action::Resize(w, h)),
                Event::Mouse(m) => mouse_action(&app, m),
                _ => None,
            };
            if let Some(a) = action {
                if let Action::Resize(w, h) = a {
                    tracing::debug!(w, h, "terminal resized");
                }
                // Esc during a search, or a new search, stops the running
                // one (the worker is busy with it: a request would wait).
                let searching = app.search.as_ref().is_some_and(|s| s.found.is_none());
                if searching && a == Action::Back && app.prompt.is_none() {
                    cancel.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                for r in app.apply(a) {
                    if matches!(r, app::Request::Search { .. }) {
                        tracing::debug!("cancelling any running search");
                        cancel.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let _ = tx.send(r);
                }
            }
        }
        while let Ok(reply) = rx.try_recv() {
            for r in app.receive(reply) {
                let _ = tx.send(r);
            }
        }
        if last_tick.elapsed() > Duration::from_millis(500) {
            last_tick = Instant::now();
            for r in app.apply(Action::Tick) {
                let _ = tx.send(r);
            }
        }
    }
    tracing::info!("UI quit");
    Ok(())
}

fn mouse_action(app: &App, m: crossterm::event::MouseEvent) -> Option<Action> {
    match m.kind {
        MouseEventKind::ScrollDown => Some(Action::Down),
        MouseEventKind::ScrollUp => Some(Action::Up),
        MouseEventKind::Down(MouseButton::Left) => {
            let a = render::areas(app);
            let at = Position::new(m.column, m.row);
            [
                (a.chain, Pane::Chain),
                (a.status, Pane::Status),
                (a.tree, Pane::Tree),
                (a.superblock, Pane::Superblock),
                (a.groups, Pane::Groups),
                (a.hex, Pane::Hex),
                (a.hitmap, Pane::HitMap),
            ]
            .into_iter()
            .find(|(r, _)| r.is_some_and(|r| r.contains(at)))
            .map(|(_, p)| Action::Focus(p))
        }
        _ => None,
    }
}
