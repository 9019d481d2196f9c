//! What every command's output shares: the `--json` envelope, the error object of a failed
//! operation, and the `--dry-run` print of a detached plan.

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

/// `--dry-run` of an operation that runs as a detached plan: the plan, exactly as the host
/// would run it, and nothing changed.
pub fn print_dry_run(
    ctx: &crate::context::Ctx,
    plan: &crate::runner::Plan,
) -> anyhow::Result<crate::error::Exit> {
    ctx.out
        .status("dry run: the plan below would run on the host, detached; nothing was changed");
    ctx.out
        .print(&plan.render(&ctx.target.state_dir, "DRY-RUN"))?;
    Ok(crate::error::Exit::Ok)
}

/// `s` with control characters (escape sequences, newlines) written as `\u{1b}` etc.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
