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
use super::msg::{Reply, Request};
use super::worker::{self, Worker};
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

/// Opens the interactive UI on the terminal for `chain`.
///
/// # Errors
/// Terminal errors. The terminal is restored on return, on error and on
/// panic.
pub fn run(chain: Chain) -> io::Result<()> {
    let palette = Palette::from_env();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    take()?;
    let (tx, rx) = mpsc::channel();
    let input = tx.clone();
    // The terminal's input, on its own thread: the loop then waits on one
    // channel for input and replies alike.
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
        run_loop(&mut terminal, chain, palette, tx, rx)
    })();
    restore();
    result
}

/// The event loop, generic over the backend and fed by a channel, so tests
/// can drive the real loop with their own events. `tx` is the channel's
/// sending side, for the worker's replies.
///
/// # Errors
/// Terminal errors.
pub fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    chain: Chain,
    palette: Palette,
    tx: Sender<UiEvent>,
    rx: Receiver<UiEvent>,
) -> io::Result<()>
where
    B::Error: Into<io::Error>,
{
    let mut app = App::for_chain(&chain);
    tracing::info!(image = %app.shared.title, size = app.shared.disk_size, layers = app.shared.layers.len(), ?palette, "UI started");
    let worker = Worker::new(chain);
    let cancel = worker.search_cancel();
    let requests = worker::spawn_into(
        worker,
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
    let mut next_tick = Instant::now() + TICK;
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
                next_tick = Instant::now() + TICK;
                send(app.apply(Action::Tick));
                None
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        while let Some(e) = event.take() {
            match e {
                UiEvent::Reply(reply) => send(app.receive(reply)),
                UiEvent::Input(input) => {
                    if let Some(a) = input_action(&app, input) {
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
                }
            }
            if app.quit {
                break;
            }
            event = rx.try_recv().ok();
        }
    }
    tracing::info!("UI quit");
    Ok(())
}

/// The action for a terminal event.
fn input_action(app: &App, input: Event) -> Option<Action> {
    match input {
        Event::Key(k) if k.kind != KeyEventKind::Release => key_action(k, app.prompt.is_some()),
        Event::Resize(w, h) => Some(Action::Resize(w, h)),
        Event::Mouse(m) => match m.kind {
            MouseEventKind::ScrollDown => Some(Action::Down),
            MouseEventKind::ScrollUp => Some(Action::Up),
            MouseEventKind::Down(MouseButton::Left) => {
                app.areas().pane_at(m.column, m.row).map(Action::Focus)
            }
            _ => None,
        },
        _ => None,
    }
}
