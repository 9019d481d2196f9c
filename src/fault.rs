//! Fault injection for the tests: `CTOPS_FAULT=<point>` makes ctops (or the backup script on
//! the host, which gets the name) die by SIGKILL at that point, as a crash would. Points:
//! `before-first-byte`, `mid-stream`, `before-flush`, `after-rename` (host side, in the
//! database backup), `before-prune` (here, in `backup all`). `pause-mid-stream` only holds
//! the dump for a few seconds, for a test to watch its progress.

/// The point the environment asks for ("" when none).
pub fn requested() -> String {
    std::env::var("CTOPS_FAULT").unwrap_or_default()
}

/// Dies here, at once and without cleanup, when `CTOPS_FAULT` names this point.
pub fn point(name: &str) {
    if requested() == name {
        crate::say!("fault injected: {name}");
        // SAFETY: sends a signal to our own process; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// A test hook: with `CTOPS_FAULT` naming this point, waits here for a while, long enough for
/// a test to run another command against what this run has done so far, or to look at the
/// terminal.
/// `say` prints the line that tells the test it is paused.
pub async fn pause_point(name: &str, say: impl FnOnce(&str)) {
    const PAUSE: std::time::Duration = std::time::Duration::from_secs(15);
    if requested() == name {
        say(&format!("paused at {name}"));
        tokio::time::sleep(PAUSE).await;
    }
}
