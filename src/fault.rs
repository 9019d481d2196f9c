//! Fault injection for the tests: `CTOPS_FAULT=<point>` makes ctops (or the backup script on
//! the host, which gets the name) die by SIGKILL at that point, as a crash would. Points:
//! `before-first-byte`, `mid-stream`, `before-flush`, `after-rename` (host side, in the
//! database backup), `before-prune` (here, in `backup all`).

/// The point the environment asks for ("" when none).
pub fn requested() -> String {
    std::env::var("CTOPS_FAULT").unwrap_or_default()
}

/// Dies here, at once and without cleanup, when `CTOPS_FAULT` names this point.
pub fn point(name: &str) {
    if requested() == name {
        eprintln!("fault injected: {name}");
        // SAFETY: sends a signal to our own process; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
