//! Integration tests: the built `ctops` binary against the sandbox host
//! (`tests/sandbox/sandbox.sh up`), checking outcomes on the host, not just exit codes.

mod pty;
mod util;
mod util2;

mod access;
mod backup;
mod cli;
mod connection;
mod corpus;
mod deploy;
mod discover;
mod doctor;
mod env;
mod health;
mod health_watch;
mod incident;
mod lock;
mod logs;
mod minio;
mod quoting;
mod restore_kept;
mod rotate;
mod runner;
mod secret_sweep;
mod service;
mod setup;
mod shape2;
mod shape2_changes;
mod status;
mod terminal;
mod update;
