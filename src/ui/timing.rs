//! Timing the UI the way it runs (for the benchmark, `layerscope render
//! --time-keys`): the real worker thread, keys applied one by one without
//! waiting for it, each key's frame drawn headless. A key's time is what
//! the UI thread spends on it: the action, the replies that are in, the
//! frame; keys pressed while a directory listing is still out are counted
//! apart, since that is when a UI that waits on I/O would stall.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde::Serialize;

use super::action::{Action, Pane};
use super::app::App;
use super::draw;
use super::hex::Palette;
use super::keys::{key_action, parse_keys};
use super::msg::{Reply, Request};
use super::worker::{self, Worker};
use crate::block::chain::Chain;

/// Directories opened at most by `visit_all`.
const MAX_VISITS: usize = 100_000;
/// How long to wait for the worker at most, per step.
const PATIENCE: Duration = Duration::from_secs(60);

/// What [`time_keys`] measured, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct KeyTimes {
    /// From start to the first frame with the hex view and filesystem in.
    pub first_frame_ms: f64,
    pub keys: usize,
    pub median_ms: f64,
    pub max_ms: f64,
    /// Keys pressed while a directory listing was out.
    pub while_listing: usize,
    pub while_listing_median_ms: f64,
    pub while_listing_max_ms: f64,
    /// Directories opened by `visit_all`, and the tree's rows then.
    pub dirs_opened: usize,
    pub tree_rows: usize,
}

struct Harness {
    app: App,
    tx: std::sync::mpsc::Sender<Request>,
    rx: std::sync::mpsc::Receiver<Reply>,
    terminal: Terminal<TestBackend>,
    /// Directory listings asked for and not answered yet.
    listing: usize,
}

impl Harness {
    fn send(&mut self, requests: Vec<Request>) {
        for r in requests {
            if matches!(r, Request::Dir { .. }) {
                self.listing = self.listing.saturating_add(1);
            }
            let _ = self.tx.send(r);
        }
    }

    fn take(&mut self, reply: Reply) {
        if matches!(reply, Reply::Dir { .. }) {
            self.listing = self.listing.saturating_sub(1);
        }
        let more = self.app.receive(reply);
        self.send(more);
    }

    /// Takes the replies that are in, without waiting.
    fn drain(&mut self) {
        while let Ok(reply) = self.rx.try_recv() {
            self.take(reply);
        }
    }

    /// Waits until `done` holds (or the worker is silent for too long).
    fn wait(&mut self, done: impl Fn(&Harness) -> bool) {
        while !done(self) {
            match self.rx.recv_timeout(PATIENCE) {
                Ok(reply) => self.take(reply),
                Err(_) => return,
            }
        }
    }

    fn draw(&mut self) {
        let app = &self.app;
        let _ = self.terminal.draw(|f| draw::draw(f, app, Palette::Ansi16));
    }
}

fn median_max(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    (at(v.len() / 2), at(v.len().saturating_sub(1)))
}

/// Runs `keys` against a `width`x`height` UI on `chain` with the worker on
/// its own thread, timing each key's frame; then, with `visit_all`, opens
/// every directory of the tree (waiting for each listing).
///
/// # Errors
/// None so far (drawing headless cannot fail); kept for other backends.
pub fn time_keys(
    chain: Chain,
    width: u16,
    height: u16,
    keys: &str,
    visit_all: bool,
) -> std::io::Result<KeyTimes> {
    let start = Instant::now();
    let app = App::for_chain(&chain);
    let (tx, rx) = worker::spawn(Worker::new(chain));
    let terminal = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(never) => match never {},
    };
    let mut h = Harness {
        app,
        tx,
        rx,
        terminal,
        listing: 0,
    };
    let first = h.app.apply(Action::Resize(width, height));
    h.send(first);
    h.wait(|h| h.app.hex.data.is_some() && h.app.superblock.fields.is_some());
    h.draw();
    let mut out = KeyTimes {
        first_frame_ms: start.elapsed().as_secs_f64() * 1000.0,
        ..KeyTimes::default()
    };
    let (mut all, mut listing) = (Vec::new(), Vec::new());
    // `Wait` in the script waits for the directory listings that are out
    // (so a script can open a directory, then press keys while the next
    // one loads).
    for (n, part) in keys.split(" Wait").enumerate() {
        if n > 0 {
            h.wait(|h| h.listing == 0);
            h.drain();
        }
        time_part(&mut h, part, &mut all, &mut listing);
    }
    out.keys = all.len();
    Ok(finish(h, out, all, listing, visit_all))
}

/// Presses `keys`, timing each.
fn time_part(h: &mut Harness, keys: &str, all: &mut Vec<f64>, listing: &mut Vec<f64>) {
    for key in parse_keys(keys) {
        let during = h.listing > 0;
        let t = Instant::now();
        if let Some(a) = key_action(key, h.app.prompt.is_some()) {
            let r = h.app.apply(a);
            h.send(r);
        }
        h.drain();
        h.draw();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        all.push(ms);
        if during {
            listing.push(ms);
        }
        // A fast typist: the worker gets the gap between keys.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Finishes [`time_keys`]: the figures, and the visits.
fn finish(
    mut h: Harness,
    mut out: KeyTimes,
    mut all: Vec<f64>,
    mut listing: Vec<f64>,
    visit_all: bool,
) -> KeyTimes {
    (out.median_ms, out.max_ms) = median_max(&mut all);
    out.while_listing = listing.len();
    (out.while_listing_median_ms, out.while_listing_max_ms) = median_max(&mut listing);
    if visit_all {
        let mut opened = HashSet::new();
        h.app.shared.focus = Pane::Tree;
        while opened.len() < MAX_VISITS {
            h.wait(|h| h.listing == 0);
            h.drain();
            let Some(i) = h
                .app
                .tree
                .nodes
                .iter()
                .position(|n| n.is_dir && !n.expanded && !opened.contains(&n.ino))
            else {
                break;
            };
            if let Some(n) = h.app.tree.nodes.get(i) {
                opened.insert(n.ino);
            }
            h.app.tree.sel = i;
            h.app.shared.focus = Pane::Tree;
            let r = h.app.apply(Action::Enter);
            h.send(r);
        }
        h.wait(|h| h.listing == 0);
        h.draw();
        out.dirs_opened = opened.len();
        out.tree_rows = h.app.tree.nodes.len();
    }
    out
}
