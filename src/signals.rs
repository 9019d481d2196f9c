//! The interruptions ctops treats alike: Ctrl-C, SIGTERM and SIGHUP.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves at the next Ctrl-C, SIGTERM or SIGHUP.
pub async fn interrupted() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}
