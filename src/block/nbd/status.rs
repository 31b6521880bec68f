//! Live connection status for the UI's NBD pane and `nbd-info`: counters
//! are atomics, written by the client and read by anyone without waiting.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// The connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    Connecting,
    Ready,
    Reconnecting,
    Failed,
}

/// Latencies kept for percentiles.
const LATENCY_WINDOW: usize = 4096;

/// Counters of one client.
#[derive(Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    pub bytes_read: AtomicU64,
    pub in_flight: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    /// Block status replies that covered too little to be worth asking
    /// again for every read (see `NbdClient::refresh`).
    pub short_replies: AtomicU64,
    state: Mutex<(ConnState, Option<String>)>,
    latencies: Mutex<VecDeque<u32>>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub state: ConnState,
    pub last_error: Option<String>,
    pub requests: u64,
    pub bytes_read: u64,
    pub in_flight: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub latency_p50_us: Option<u32>,
    pub latency_p99_us: Option<u32>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Fresh counters.
    pub fn new() -> Self {
        Stats {
            requests: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            short_replies: AtomicU64::new(0),
            state: Mutex::new((ConnState::Connecting, None)),
            latencies: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
        }
    }

    /// Sets the state, and the last error when there is one.
    pub fn set_state(&self, state: ConnState, error: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = state;
            if error.is_some() {
                s.1 = error;
            }
        }
    }

    /// Records an error that did not change the state.
    pub fn set_last_error(&self, error: String) {
        if let Ok(mut s) = self.state.lock() {
            s.1 = Some(error);
        }
    }

    /// Records one finished request.
    pub fn record_request(&self, latency: Duration, _bytes: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies.lock() {
            if l.len() == LATENCY_WINDOW {
                l.pop_front();
            }
            l.push_back(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
    }

    /// A consistent-enough copy for display.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (state, last_error) = self
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or((ConnState::Failed, None));
        let (p50, p99) = self
            .latencies
            .lock()
            .map(|l| {
                let mut v: Vec<u32> = l.iter().copied().collect();
                v.sort_unstable();
                // The q-th percentile's index: below v.len() for q <= 100.
                let pick = |q: usize| {
                    v.get(v.len().saturating_sub(1).saturating_mul(q) / 100)
                        .copied()
                };
                (pick(50), pick(99))
            })
            .unwrap_or((None, None));
        StatsSnapshot {
            state,
            last_error,
            requests: self.requests.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            latency_p50_us: p50,
            latency_p99_us: p99,
        }
    }
}
