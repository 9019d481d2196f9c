//! Runbook 6.2, `status`: each service's state, health, restarts, uptime and image, and what
//! the checkout on the host holds.

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::compose::{uptime, Stack};
use crate::context::Ctx;
use crate::error::Exit;
use crate::lock::Holder;
use crate::output::{Styled, Tone};
use crate::remote::{Remote, RemoteCommand};
use crate::runner::{last_operation, LastOperation};

#[derive(Debug, Serialize)]
struct ServiceState {
    service: String,
    container: String,
    state: String,
    health: Option<String>,
    restarts: u64,
    oom_killed: bool,
    started_at: String,
    uptime: Option<String>,
    image: String,
}

/// The checkout on the host: what code the containers were built from.
#[derive(Debug, Serialize, Default)]
pub struct Checkout {
    pub commit: String,
    pub branch: Option<String>,
    pub describe: String,
    pub version: Option<String>,
    pub dirty: bool,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    project: Option<String>,
    services: Vec<ServiceState>,
    checkout: Checkout,
    /// The last operation ctops ran on the host (from its journal): in flight, interrupted,
    /// or how it ended.
    operation: Option<LastOperation>,
    lock: Option<Holder>,
}

const CHECKOUT_SCRIPT: &str = r#"cd "$1" || exit 1
git rev-parse HEAD
git symbolic-ref -q --short HEAD || echo
git describe --tags --always
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then echo dirty; else echo clean; fi
head -n 1 VERSION 2>/dev/null || true"#;

/// Reads the checkout's commit, branch, nearest tag, cleanliness and VERSION in one call.
pub async fn read_checkout(remote: &Remote, dir: &str) -> Result<Checkout, crate::error::Error> {
    let cmd = RemoteCommand::sh(CHECKOUT_SCRIPT, [dir]).read_only();
    let out = remote.run_ok(&cmd).await?;
    let text = out.stdout_text();
    let mut lines = text.lines().map(str::trim);
    let mut next = || lines.next().unwrap_or_default().to_string();
    let commit = next();
    let branch = Some(next()).filter(|b| !b.is_empty());
    let describe = next();
    let dirty = next() == "dirty";
    let version = Some(next()).filter(|v| !v.is_empty());
    Ok(Checkout {
        commit,
        branch,
        describe,
        version,
        dirty,
    })
}

/// A container's state as `docker inspect` names it: only `running` is good.
fn state_cell(state: &str) -> Styled {
    match state {
        "running" => Styled::good(state),
        "created" | "paused" | "restarting" => Styled::warn(state),
        _ => Styled::bad(state),
    }
}

/// A container's health: `starting` is not yet a verdict.
fn health_cell(health: &str) -> Styled {
    match health {
        "healthy" => Styled::good(health),
        "starting" => Styled::warn(health),
        _ => Styled::bad(health),
    }
}

pub async fn run(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let (stack, checkout, operation, lock) = tokio::join!(
        Stack::load(remote, &ctx.target),
        read_checkout(remote, &ctx.target.dir),
        last_operation(remote, &ctx.target.state_dir),
        crate::lock::show(remote, &ctx.target.state_dir),
    );
    let (stack, checkout, operation, lock) = (stack?, checkout?, operation?, lock?);
    let services: Vec<ServiceState> = stack
        .containers
        .iter()
        .map(|c| ServiceState {
            service: c.service.clone(),
            container: c.name.clone(),
            state: c.state.clone(),
            health: c.health.clone(),
            restarts: c.restarts,
            oom_killed: c.oom_killed,
            started_at: c.started_at.clone(),
            uptime: c
                .running()
                .then(|| uptime(&c.started_at, stack.host_time))
                .flatten(),
            image: c.image.clone(),
        })
        .collect();
    if ctx.out.json {
        let envelope = Envelope::new("status", ctx, true);
        ctx.out.json_doc(&Report {
            envelope,
            project: stack.project.clone(),
            services,
            checkout,
            operation,
            lock,
        })?;
        return Ok(Exit::Ok);
    }
    ctx.out.status(format!(
        "status of {}, compose project {}",
        ctx.target_label(),
        stack.project.as_deref().unwrap_or("(none running)")
    ));
    let rows = services
        .iter()
        .map(|s| {
            vec![
                s.service.as_str().into(),
                state_cell(&s.state),
                s.health.as_deref().map_or("-".into(), health_cell),
                Styled::new(
                    s.restarts.to_string() + if s.oom_killed { " (OOM)" } else { "" },
                    if s.oom_killed { Tone::Bad } else { Tone::Plain },
                ),
                s.uptime.as_deref().unwrap_or("-").into(),
                s.image.as_str().into(),
            ]
        })
        .collect();
    let mut text = ctx.out.table(
        &["SERVICE", "STATE", "HEALTH", "RESTARTS", "UPTIME", "IMAGE"],
        rows,
    );
    text.push_str(&format!(
        "\n\ncheckout {} at {} ({}{}), VERSION {}",
        ctx.target.dir,
        checkout.describe,
        checkout.branch.as_deref().unwrap_or("detached HEAD"),
        if checkout.dirty {
            ", uncommitted changes"
        } else {
            ""
        },
        checkout.version.as_deref().unwrap_or("unknown"),
    ));
    if let Some(op) = &operation {
        let when = op
            .ended
            .as_deref()
            .map(|e| format!(", ended {e}"))
            .unwrap_or_default();
        let failed = op
            .steps
            .iter()
            .rev()
            .find(|s| s.kind == "fail")
            .map(|s| format!("; failed step: {} ({})", s.step, s.detail))
            .unwrap_or_default();
        let away = if op.ended.is_some() && !op.watched {
            " (finished while nobody watched)"
        } else {
            ""
        };
        text.push_str(&format!(
            "\nlast operation {}: {} — {}{when}{away}{failed}",
            op.id, op.describe, op.state
        ));
    }
    if let Some(holder) = &lock {
        let stale = if holder.stale { " (stale)" } else { "" };
        text.push_str(&format!("\nhost lock{stale}: {}", holder.describe()));
    }
    ctx.out.print(&text)?;
    Ok(Exit::Ok)
}
