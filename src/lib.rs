//! ctops: the CalmTrader operations runbook as safe, fast, scriptable commands.
//!
//! `cli` parses, `config` resolves a target, `ops` holds one module per runbook section
//! (what to run), `compose` builds compose commands and reads the stack's state, and
//! `remote` runs commands over one SSH connection (how to run them).

pub mod cli;
pub mod compose;
pub mod config;
pub mod context;
pub mod discover;
pub mod envfile;
pub mod error;
pub mod fault;
pub mod lock;
pub mod migrations;
pub mod ops;
pub mod output;
pub mod remote;
pub mod runner;
pub mod s3;
pub mod scram;
pub mod signals;
