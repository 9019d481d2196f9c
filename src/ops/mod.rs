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

/// Runs a host script (or any command) and fails unless it exits 0, naming the `step` (never
/// the script's text) and showing the last lines of its stderr.
pub async fn run_step(
    remote: &crate::remote::Remote,
    cmd: &crate::remote::RemoteCommand,
    step: &str,
) -> Result<crate::remote::Captured, crate::error::Error> {
    let out = remote.run(cmd).await?;
    if out.status == 0 {
        return Ok(out);
    }
    let stderr = out.stderr_text();
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
    Err(crate::error::Error::failed(format!(
        "{step} on {} failed (exit {}){}",
        remote.host(),
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    )))
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

/// Streams a command's output to stderr as it comes (a build or an upgrade takes minutes);
/// with `-q`, only a failure's output is shown. `what` names it in the error.
pub async fn run_streamed(
    ctx: &crate::context::Ctx,
    remote: &crate::remote::Remote,
    cmd: &crate::remote::RemoteCommand,
    what: &str,
) -> Result<(), crate::error::Error> {
    let (status, said) = if ctx.out.quiet {
        let out = remote.run(cmd).await?;
        (out.status, out.stderr_text())
    } else {
        let timeout = Some(remote.timeout_of(cmd));
        let status = remote
            .stream(cmd, &mut tokio::io::stderr(), timeout)
            .await?;
        (status, "see above".to_string())
    };
    if status == 0 {
        Ok(())
    } else {
        Err(crate::error::Error::failed(format!(
            "`{what}` exited {status} on {}: {}",
            remote.host(),
            said.trim()
        )))
    }
}
