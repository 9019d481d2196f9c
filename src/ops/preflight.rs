//! Runbook 2.3, `preflight`: the pre-deployment checklist alone, against what `deploy` would
//! deploy now (the checks themselves are in [`crate::release_checks`]).

use anyhow::Result;

use crate::cli::PreflightArgs;
use crate::context::Ctx;
use crate::deployed::Probe;
use crate::error::Exit;
use crate::release_checks::{report, run_checks};

/// `ctops preflight`: the checklist alone, against what `deploy` would deploy now.
pub async fn run(ctx: &Ctx, args: &PreflightArgs) -> Result<Exit> {
    // As deploy checks it: the ref reaches git on the host (`--upload-pack=...`, `a..b`).
    if let Some(reference) = &args.r#ref {
        crate::deployed::validate_ref(reference)?;
    }
    let repo = args.repo.clone().unwrap_or_else(|| ".".into());
    let remote = ctx.remote().await?;
    let probe = Probe::read(ctx, remote, args.r#ref.as_deref()).await?;
    ctx.out.status(format!(
        "preflight of {} ({}) for {}",
        probe.target.reference,
        &probe.target.commit[..12],
        ctx.target_label()
    ));
    let checks = run_checks(ctx, &repo, &probe);
    report(ctx, &checks, true)?;
    Ok(Exit::Ok)
}
