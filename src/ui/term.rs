//! The interactive UI on a real terminal: setting it up and giving it
//! back, and the event loop. The loop waits on one channel that carries
//! the terminal's input (read on its own thread), the worker's replies and
//! nothing else; when it is quiet for a tick it refreshes live data. It
//! never polls and never waits on I/O: all reading is the worker's.
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind, MouseButton, MouseEventKind};
use ratatui::backend::Backend;
use ratatui::Terminal;

use super::action::Action;
use super::app::App;
use super::hex::Palette;
use super::keys::key_action;
use super::layout::tabs;
use super::msg::{Reply, Request};
use super::worker::{self, Opener, Options};
use crate::block::chain::Chain;

/// How often live data (the NBD status, the runtime hit map) refreshes.
const TICK: Duration = Duration::from_millis(500);

/// What the event loop waits for.
#[derive(Debug)]
pub enum UiEvent {
    /// From the terminal: a key, the mouse, a resize.
    Input(Event),
    /// From the worker.
    Reply(Reply),
    /// A signal: SIGTERM, SIGHUP, SIGINT (quit, giving the terminal back),
    /// SIGTSTP (suspend), SIGCONT (draw anew).
    Signal(i32),
}

/// What the loop needs of the terminal beyond drawing: giving it back
/// and taking it again around a suspension. Tests pass one that records.
pub trait Host {
    /// Gives the terminal back (main screen, cooked mode, no mouse).
    fn release(&mut self);
    /// Takes it again.
    ///
    /// # Errors
    /// The terminal cannot be set up.
    fn take(&mut self) -> io::Result<()>;
    /// Stops the process until `fg` (SIGCONT).
    fn stop(&mut self);
}

/// The real terminal.
struct Tty;

impl Host for Tty {
    fn release(&mut self) {
        restore();
    }

    fn take(&mut self) -> io::Result<()> {
        take()
    }

    fn stop(&mut self) {
        // SIGSTOP, not SIGTSTP: our handler has SIGTSTP (to give the
        // terminal back first), and SIGSTOP cannot be caught.
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGSTOP);
    }
}

/// Restores the terminal: raw mode off, main screen back, mouse released.
fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        io::stdout(),
        event::DisableMouseCapture,
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Takes the terminal: raw mode, the alternate screen, the mouse.
fn take() -> io::Result<()> {
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(
        io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        event::EnableMouseCapture
    )
}

/// The signals the UI answers.
const SIGNALS: [i32; 5] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTSTP,
    signal_hook::consts::SIGCONT,
];

/// Opens the interactive UI on the terminal for `chain`.
///
/// # Errors
/// As [`run_opening`].
pub fn run(chain: Chain) -> io::Result<()> {
    let info = crate::ui::msg::ChainInfo::of(&chain);
    run_opening(
        &info.title,
        info.is_nbd,
        Box::new(move || Ok(chain)),
        Options::default(),
    )
}

/// Opens the interactive UI at once and the chain on the worker (`open`),
/// saying what it waits for: `title` names the image, `is_nbd` says it is
/// a server being connected to.
///
/// # Errors
/// Terminal errors. The terminal is restored on return, on error, on
/// panic and on SIGTERM, SIGHUP or SIGINT; after one of those the process
/// then ends by that signal, as it would have without the UI.
pub fn run_opening(title: &str, is_nbd: bool, open: Opener, options: Options) -> io::Result<()> {
    let palette = Palette::from_env();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    let (tx, rx) = mpsc::channel();
    // Signals first: one arriving while the terminal is being set up is
    // answered once the loop runs.
    let mut signals = signal_hook::iterator::Signals::new(SIGNALS)?;
    let to_loop = tx.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if to_loop.send(UiEvent::Signal(sig)).is_err() {
                return;
            }
        }
    });
    take()?;
    let input = tx.clone();
    // The terminal's input, on its own thread: the loop then waits on one
    // channel for input, replies and signals alike.
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(e) => {
                if input.send(UiEvent::Input(e)).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let result = (|| {
        let mut terminal = Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))?;
        let mut app = App::opening(crate::escape::printable(title), is_nbd);
        app.hitmap.want = options.bitmap.clone();
        run_loop(
            &mut terminal,
            app,
            (open, options),
            palette,
            (tx, rx),
            &mut Tty,
        )
    })();
    restore();
    match result {
        Ok(Ended::Signal(sig)) => {
            tracing::info!(signal = sig, "ending by the signal received");
            // Ends the process as the signal would have.
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            Ok(())
        }
        Ok(Ended::Quit) => Ok(()),
        Ok(Ended::OpenFailed(e)) => Err(io::Error::other(e)),
        Err(e) => Err(e),
    }
}

/// How the loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The user quit.
    Quit,
    /// A signal (SIGTERM, SIGHUP, SIGINT) ended it.
    Signal(i32),
    /// The user quit after the chain failed to open: why.
    OpenFailed(String),
}

/// The event loop, generic over the backend and fed by a channel, so tests
/// can drive the real loop with their own events: `app` as it starts (see
/// [`App::opening`]), `open` run on the worker (which then serves with
/// those options), `events` the channel (its
/// sending side is for the worker's replies).
///
/// # Errors
/// Terminal errors.
pub fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    mut app: App,
    (open, options): (Opener, Options),
    palette: Palette,
    events: (Sender<UiEvent>, Receiver<UiEvent>),
    host: &mut dyn Host,
) -> io::Result<Ended>
where
    B::Error: Into<io::Error>,
{
    let (tx, rx) = events;
    tracing::info!(image = %app.shared.title, ?palette, "UI started");
    let cancel = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let requests = worker::spawn_opening(
        open,
        options,
        Arc::clone(&cancel),
        Arc::new(move |r| tx.send(UiEvent::Reply(r)).is_ok()),
    );
    let send = |rs: Vec<Request>| {
        for r in rs {
            if matches!(r, Request::Search { .. }) {
                tracing::debug!("cancelling any running search");
                cancel.fetch_add(1, Ordering::Relaxed);
            }
            let _ = requests.send(r);
        }
    };
    let size = terminal.size().map_err(Into::into)?;
    send(app.apply(Action::Resize(size.width, size.height)));
    let mut next_tick = super::deadline::after(TICK);
    let mut ended_by = None;
    while !app.quit {
        terminal
            .draw(|f| super::draw::draw(f, &app, palette))
            .map_err(Into::into)?;
        // Wait for something to happen, then take everything that is in
        // before drawing again.
        let wait = next_tick.saturating_duration_since(Instant::now());
        let mut event = match rx.recv_timeout(wait) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) => {
                next_tick = super::deadline::after(TICK);
                send(app.apply(Action::Tick));
                None
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        while let Some(e) = event.take() {
            let action = match e {
                UiEvent::Reply(reply) => {
                    send(app.receive(reply));
                    None
                }
                UiEvent::Input(input) => input_action(&app, input),
                UiEvent::Signal(sig) if sig == signal_hook::consts::SIGTSTP => {
                    Some(Action::Suspend)
                }
                UiEvent::Signal(sig) if sig == signal_hook::consts::SIGCONT => Some(Action::Redraw),
                UiEvent::Signal(sig) => {
                    tracing::info!(signal = sig, "quitting on a signal");
                    ended_by = Some(sig);
                    app.quit = true;
                    None
                }
            };
            match action {
                Some(Action::Suspend) => {
                    tracing::info!("suspended");
                    host.release();
                    host.stop();
                    // Here again after `fg`.
                    host.take()?;
                    redraw(terminal)?;
                    tracing::info!("resumed");
                }
                Some(Action::Redraw) => redraw(terminal)?,
                Some(a) => {
                    if let Action::Resize(w, h) = a {
                        tracing::debug!(w, h, "terminal resized");
                    }
                    // Esc during a search stops the running one (the
                    // worker is busy with it: a request would wait).
                    if app.tree.searching() && a == Action::Back && app.prompt.is_none() {
                        cancel.fetch_add(1, Ordering::Relaxed);
                    }
                    send(app.apply(a));
                }
                None => {}
            }
            if app.quit {
                break;
            }
            event = rx.try_recv().ok();
        }
    }
    tracing::info!("UI quit");
    Ok(match (ended_by, &app.shared.open) {
        (Some(sig), _) => Ended::Signal(sig),
        (None, crate::ui::context::OpenState::Failed(e)) => Ended::OpenFailed(e.clone()),
        (None, _) => Ended::Quit,
    })
}

/// Rows a notch of the wheel scrolls.
const WHEEL_ROWS: i8 = 3;

/// The action for a terminal event: keys through the key table; a click
/// on a tab focuses its pane, a click in a pane focuses it and selects
/// the row under the pointer; the wheel scrolls the pane under the
/// pointer, focused or not.
fn input_action(app: &App, input: Event) -> Option<Action> {
    match input {
        Event::Key(k) if k.kind != KeyEventKind::Release => key_action(k, app.prompt.is_some()),
        Event::Resize(w, h) => Some(Action::Resize(w, h)),
        Event::Mouse(m) => {
            let a = app.areas();
            let at = ratatui::layout::Position::new(m.column, m.row);
            if let Some(t) = a.tabs.filter(|t| t.contains(at)) {
                return match m.kind {
                    MouseEventKind::Down(MouseButton::Left) => tabs(t.width)
                        .into_iter()
                        .find(|(_, _, x0, x1)| (*x0..*x1).contains(&m.column.saturating_sub(t.x)))
                        .map(|(p, ..)| Action::Focus(p)),
                    _ => None,
                };
            }
            let pane = a.pane_at(m.column, m.row)?;
            let top = a.of(pane)?.y;
            match m.kind {
                MouseEventKind::ScrollDown => Some(Action::Wheel(pane, WHEEL_ROWS)),
                MouseEventKind::ScrollUp => Some(Action::Wheel(pane, -WHEEL_ROWS)),
                MouseEventKind::Down(MouseButton::Left) => {
                    // Row 0 is the first inside the frame; the frame's
                    // own rows just focus.
                    match m.row.checked_sub(top.saturating_add(1)) {
                        Some(row) => Some(Action::Click(pane, row)),
                        None => Some(Action::Focus(pane)),
                    }
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Draws the whole screen anew at the next frame. `Terminal::clear` would
/// ask the terminal where its cursor is, an answer the input thread (which
/// holds the terminal's input) would swallow; a resize to the same size
/// clears the screen and the back buffer without asking.
fn redraw<B: Backend>(terminal: &mut Terminal<B>) -> io::Result<()>
where
    B::Error: Into<io::Error>,
{
    let size = terminal.size().map_err(Into::into)?;
    terminal
        .resize(ratatui::layout::Rect::new(0, 0, size.width, size.height))
        .map_err(Into::into)
}
