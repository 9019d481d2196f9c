//! ctops: the CalmTrader operations runbook as safe, fast, scriptable commands.
//!
//! `cli` parses, `config` resolves a target, `ops` holds one module per runbook section
//! (what to run), `compose` builds compose commands and reads the stack's state, and
//! `remote` runs commands over one SSH connection (how to run them).
//!
//! Sections never use each other (a unit test in `ops` enforces it; `switch`, the deploy and
//! rollback engine, is theirs alone). What several of them share is a layer below `ops`:
//! `discover` (facts about the host and the stack), `deployed` (what runs, and the release
//! history), `catalog` (the backups and their manifests), `snapshots` (the MinIO store),
//! `envchange` (the `.env` change transaction), `gate` (following a runner and its health
//! gate), `release_checks` (runbook 2.3's checklist), `checks` and `report` (what reports
//! share), `hostprep` (what a host needs before the first change: `setup`'s facts and the
//! root commands that make them hold).

/// `eprintln!` that never panics: a closed stderr (`ctops deploy 2>&1 | head`) must not stop
/// ctops half-way through an operation; what could not be said is lost, the work goes on.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod catalog;
pub mod checks;
pub mod cli;
pub mod compose;
pub mod config;
pub mod context;
pub mod deployed;
pub mod discover;
pub mod envchange;
pub mod envfile;
pub mod error;
pub mod fault;
pub mod gate;
pub mod hostfacts;
pub mod hostprep;
pub mod lock;
pub mod migrations;
pub mod ops;
pub mod output;
pub mod probes;
pub mod release_checks;
pub mod remote;
pub mod report;
pub mod runner;
pub mod s3;
pub mod scram;
pub mod signals;
pub mod snapshots;
pub mod summary;
