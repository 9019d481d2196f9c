//! Runbook 2.1-2.2 and 3.1, `deploy`: preflight, then a health-gated switch to the ref that
//! rolls itself back on failure (see `switch`).

use anyhow::Result;

use super::switch::{self, Kind, Request};
use crate::cli::DeployArgs;
use crate::context::Ctx;
use crate::error::{Error, Exit};

pub async fn run(ctx: &Ctx, args: &DeployArgs) -> Result<Exit> {
    let preflight = if args.skip_preflight {
        let reason = args.reason.as_deref().unwrap_or("").trim();
        if reason.is_empty() {
            return Err(Error::usage("--skip-preflight needs a --reason").into());
        }
        ctx.out.warn(format!("preflight skipped: {reason}"));
        None
    } else {
        Some(args.repo.clone().unwrap_or_else(|| ".".into()))
    };
    // On a protected target, `switch` asks once it can show the plan (from, to, schema).
    let request = Request {
        kind: Kind::Deploy,
        reference: args.r#ref.clone(),
        force: args.force,
        command_line: command_line(args),
        preflight,
    };
    switch::run(ctx, &request).await
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
