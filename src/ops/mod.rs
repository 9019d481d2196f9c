//! One module per runbook section. Each says *what* to run; `remote` and `compose` know how.

pub mod access;
pub mod backup;
pub mod config_check;
pub mod deploy;
pub mod env;
pub mod health;
pub mod incident;
pub mod lock;
pub mod logs;
pub mod minio;
pub mod preflight;
pub mod releases;
pub mod restore;
pub mod rollback;
pub mod rotate;
pub mod service;
pub mod stats;
pub mod status;
pub mod switch;
pub mod update;

use serde::Serialize;

/// The fields every `--json` document starts with.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub command: &'a str,
    pub target: &'a str,
    pub host: &'a str,
    pub ok: bool,
}

impl<'a> Envelope<'a> {
    pub fn new(command: &'a str, ctx: &'a crate::context::Ctx, ok: bool) -> Self {
        Envelope {
            command,
            target: &ctx.target.name,
            host: &ctx.target.ssh,
            ok,
        }
    }
}

/// The `error` object of a document whose operation did not succeed (`None` when it did).
pub fn error_object(
    exit: crate::error::Exit,
    message: Option<&String>,
) -> Option<serde_json::Value> {
    message.map(|m| serde_json::json!({"kind": exit.kind(), "message": m}))
}
