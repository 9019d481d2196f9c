//! Runbook 2.1-2.2 and 3.1, `deploy`: preflight, then a health-gated switch to the ref that
//! rolls itself back on failure (see `switch`).

use anyhow::Result;

use super::switch::{self, Kind};
use crate::cli::DeployArgs;
use crate::context::Ctx;
use crate::error::{Error, Exit};

pub async fn run(ctx: &Ctx, args: &DeployArgs) -> Result<Exit> {
    if args.skip_preflight {
        let reason = args.reason.as_deref().unwrap_or("").trim();
        if reason.is_empty() {
            return Err(Error::usage("--skip-preflight needs a --reason").into());
        }
        ctx.out.warn(format!("preflight skipped: {reason}"));
    } else {
        return Err(Error::refused("preflight is not available yet in this build")
            .with_help("run the runbook 2.3 checklist by hand, then `ctops deploy --skip-preflight --reason TEXT`")
            .into());
    }
    if ctx.target.protected && !ctx.dry_run {
        ctx.confirm(&format!("deploy to {}", ctx.target_label()))?;
    }
    let command_line = command_line(args);
    switch::run(
        ctx,
        Kind::Deploy,
        args.r#ref.as_deref(),
        args.force,
        &command_line,
    )
    .await
}

/// What the lock and the audit log record as the command.
fn command_line(args: &DeployArgs) -> String {
    let mut words = vec!["deploy".to_string()];
    if let Some(r) = &args.r#ref {
        words.extend(["--ref".into(), r.clone()]);
    }
    if args.force {
        words.push("--force".into());
    }
    if let Some(reason) = &args.reason {
        words.extend(["--skip-preflight".into(), "--reason".into(), reason.clone()]);
    }
    words.join(" ")
}
