//! Deadlines for the UI's loops and the worker's time slices: a leaf the
//! panes, the terminal loop and the worker share without going through
//! the `ui` facade.

/// The instant `d` from now (now itself past the clock's range, which no
/// deadline here comes near).
pub fn after(d: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(d).unwrap_or(now)
}
