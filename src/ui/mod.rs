//! The terminal UI: panes for the layer chain, the NBD connection, the
//! filesystem (superblock, groups, tree), the hex view and the hit map,
//! over one worker thread that does all the I/O.
//!
//! How it is put together (each module depends only on those above it):
//! - [`action`]: what the user can ask for, and the panes;
//! - [`msg`]: requests to the worker and its replies;
//! - [`context`]: the state panes share, and the effects by which a pane
//!   reaches the others;
//! - [`layout`], [`style`], [`hex`]: where panes go, how things look;
//! - [`keys`]: the one key table (handler, help and bar);
//! - [`panes`]: one struct per pane, owning its state, drawing and keys;
//! - [`app`]: routes keys and replies to the panes, carries out effects;
//! - [`draw`]: the frame, a pure function of the app;
//! - [`worker`]: the readers, on their own thread; [`search`] its walk;
//! - [`term`]: the terminal and the event loop; this module:
//!   [`render_frame`] for headless frames (`layerscope render`, snapshot
//!   tests).
// Disk and server data must never panic or wrap (issue 11): as in src/fs,
// these lints are denied outside tests; an `allow` names the bound that
// makes it safe.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
pub mod action;
pub mod app;
pub mod context;
pub mod deadline;
pub mod draw;
pub mod fsinfo;
pub mod goto;
pub mod hex;
pub mod keys;
pub mod layout;
pub mod log;
pub mod msg;
pub mod panes;
pub mod search;
pub mod style;
pub mod term;
pub mod text;
pub mod timing;
pub mod worker;

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use action::Action;
use app::App;
pub use keys::{key_action, parse_keys};
use msg::Request;
pub use term::{run, run_loop, run_opening, Ended, Host, UiEvent};
use worker::Worker;

use crate::block::chain::Chain;

/// Builds the app state for a chain.
pub fn app_for(chain: &Chain) -> App {
    App::for_chain(chain)
}

/// Runs `keys` against the app with the worker inline (deterministic: each
/// request is answered before the next key) and returns the final frame as
/// text, one line per row; `ansi` keeps colours as escape sequences.
///
/// This is the library side of `layerscope render`: users can
/// `insta::assert_snapshot!(render_frame(...))` in their own tests.
pub fn render_frame(chain: Chain, width: u16, height: u16, keys: &str, ansi: bool) -> String {
    render_frame_in(chain, None, width, height, keys, ansi)
}

/// [`render_frame`] with the filesystem panes on volume `volume` (`p1`,
/// `vg0/root`, as `layerscope volumes` names it; `None`: the whole disk).
pub fn render_frame_in(
    chain: Chain,
    volume: Option<&str>,
    width: u16,
    height: u16,
    keys: &str,
    ansi: bool,
) -> String {
    let options = worker::Options {
        volume: volume.map(str::to_owned),
        ..Default::default()
    };
    render_frame_with(chain, options, width, height, keys, ansi)
}

/// [`render_frame`] with the worker's `options`: the volume in view, and
/// how a journal that needs recovery is read (`--no-replay`).
pub fn render_frame_with(
    chain: Chain,
    options: worker::Options,
    width: u16,
    height: u16,
    keys: &str,
    ansi: bool,
) -> String {
    render(chain, options, (width, height), keys, ansi, true)
}

/// The first frame the interactive UI draws, as text: the panes' first
/// answers, the hit map as far as its first probe got (the counts still
/// `…`), nothing waited for. What it shows of the hit map depends on how
/// fast the disk answers: for measuring, not for comparing.
pub fn render_first_frame(
    chain: Chain,
    options: worker::Options,
    width: u16,
    height: u16,
    ansi: bool,
) -> String {
    render(chain, options, (width, height), "", ansi, false)
}

/// Draws after `keys`; with `exact`, the hit map's grid made exact
/// before each key.
fn render(
    chain: Chain,
    options: worker::Options,
    (width, height): (u16, u16),
    keys: &str,
    ansi: bool,
    exact: bool,
) -> String {
    let mut app = App::for_chain_with(&chain, options.bitmap.clone());
    let mut worker = Worker::new(chain).with_options(options);
    let mut serve = |app: &mut App, requests: Vec<Request>| {
        // Follow-up requests (a file's bytes after its location) too,
        // bounded in case of a loop.
        let mut queue: std::collections::VecDeque<Request> = requests.into();
        let mut budget = 64u32;
        while let Some(r) = queue.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
            let reply = worker.handle(r);
            queue.extend(app.receive(reply));
            // Headless frames are the finished picture: the hit map's
            // grid made exact before the next key.
            while exact && queue.is_empty() && worker.refining() {
                if let Some(reply) = worker.refine(std::time::Duration::from_secs(3600)) {
                    queue.extend(app.receive(reply));
                }
            }
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
    draw_text(&app, ansi)
}

/// The frame `app` draws at its current size, as text (with the 16 ANSI
/// colours as escape sequences when `ansi`): for tests that drive an
/// [`App`] themselves, e.g. to see a request still pending.
pub fn draw_text(app: &App, ansi: bool) -> String {
    let (w, h) = (app.shared.width, app.shared.height);
    let mut terminal = match Terminal::new(TestBackend::new(w, h)) {
        Ok(t) => t,
        Err(e) => return format!("cannot draw: {e}"),
    };
    let palette = if ansi {
        hex::Palette::Ansi16
    } else {
        hex::Palette::None
    };
    if let Err(e) = terminal.draw(|f| draw::draw(f, app, palette)) {
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
