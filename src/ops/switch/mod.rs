//! What deploy and rollback share (runbook 2.2, 3.1-3.3): read the running release, resolve
//! the target, plan the switch as typed steps, run it detached on the host, report.
//!
//! Where the runbook is wrong, this is right: migrations are downgraded with the image that
//! has the scripts (the current one) *before* the old code is checked out, and upgraded with
//! the new image in a one-off container before the running containers are replaced.

mod plan;

use anyhow::Result;
use serde::Serialize;

pub use crate::deployed::{validate_ref, Probe, Release, RELEASE_TAG_PREFIX};
pub use plan::{changelog_section, plan, Kind, Notify};

use crate::context::Ctx;
use crate::deployed::short;
use crate::error::{Error, Exit};
use crate::gate::{failure_summary, follow_with_interrupts, Followed};
use crate::lock::HostLock;
use crate::remote::Remote;
use crate::runner::{self, Event};

/// How a switch ended, for humans and `--json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    #[serde(flatten)]
    pub envelope: super::Envelope<'a>,
    pub op: String,
    pub outcome: String,
    pub from: Release,
    pub to: Release,
    pub rolled_back: bool,
    pub steps: Vec<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// One switch, as the user asked for it.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub reference: Option<String>,
    pub force: bool,
    /// What the lock and the audit log record.
    pub command_line: String,
    /// Run preflight (runbook 2.3) on this local checkout before anything changes.
    pub preflight: Option<std::path::PathBuf>,
}

/// Locks, probes, plans, runs and reports one switch.
pub async fn run(ctx: &Ctx, request: &Request) -> Result<Exit> {
    if let Some(r) = &request.reference {
        validate_ref(r)?;
    }
    let remote = ctx.remote().await?;
    let t = &ctx.target;
    let acquire = async {
        match ctx.dry_run {
            true => Ok(None),
            false => HostLock::acquire(remote, &t.state_dir, &request.command_line)
                .await
                .map(Some),
        }
    };
    // Reading the host needs no lock, so it overlaps with taking it: one round trip less.
    let reference = request.reference.as_deref();
    let (known, lock, probe) = tokio::join!(
        warn_about_last_operation(ctx, remote),
        acquire,
        Probe::read(ctx, remote, reference)
    );
    let lock = lock?;
    if let Err(e) = known {
        if let Some(lock) = &lock {
            let _ = lock.release(remote).await;
        }
        return Err(e.into());
    }
    let probe = match lock.as_ref().and_then(|l| l.took_over.as_ref()) {
        Some(stale) => {
            ctx.out
                .warn(format!("took over a stale host lock: {}", stale.describe()));
            // Its holder may have changed the host while it was read: read it again.
            Probe::read(ctx, remote, reference).await
        }
        None => probe,
    };
    let result = match probe {
        Ok(probe) => plan_and_run(ctx, remote, request, lock.as_ref(), probe).await,
        Err(e) => Err(e.into()),
    };
    if let (Err(_), Some(lock)) = (&result, &lock) {
        // The runner never started (or never got the lock's lease): free it here.
        let _ = lock.release(remote).await;
    }
    result
}

async fn plan_and_run(
    ctx: &Ctx,
    remote: &Remote,
    request: &Request,
    lock: Option<&HostLock>,
    probe: Probe,
) -> Result<Exit> {
    let t = &ctx.target;
    let kind = request.kind;
    if !probe.dirty.is_empty() {
        return Err(Error::refused(format!("the checkout {} on {} has local changes: {}", t.dir, remote.host(), probe.dirty.join(", ")))
            .with_help("commit or discard them on the host (ctops never runs `git clean`, which would delete .env)")
            .into());
    }
    let op_id = runner::op_id(probe.host_time, kind.name());
    if let Some(repo) = &request.preflight {
        ctx.out.status("preflight (runbook 2.3):");
        crate::release_checks::report(
            ctx,
            &crate::release_checks::run_checks(ctx, repo, &probe),
            false,
        )?;
    }
    let notify = match kind {
        Kind::Deploy => Notify::for_new_version(ctx, remote, &probe).await?,
        Kind::Rollback => None,
    };
    let plan = plan(
        ctx,
        &probe,
        kind,
        request.force,
        &op_id,
        &request.command_line,
        notify.as_ref(),
    )?;
    ctx.out.status(format!(
        "{} {} on {}: {} ({}) -> {} ({})",
        kind.name(),
        probe.target.reference,
        ctx.target_label(),
        probe.current.version,
        short(&probe.current.commit),
        probe.target.version,
        short(&probe.target.commit)
    ));
    let history = crate::deployed::read_history(remote, &t.state_dir)
        .await
        .unwrap_or_default();
    ctx.out
        .status(summary(ctx, &probe, kind, &plan, &history).render());
    let Some(lock) = lock else {
        return super::print_dry_run(ctx, &plan);
    };
    // Asked with the lock held: what the summary shows is what will run.
    match kind {
        Kind::Rollback => ctx.confirm(&format!(
            "roll {} back to version {} ({})",
            ctx.target_label(),
            probe.target.version,
            short(&probe.target.commit)
        ))?,
        Kind::Deploy if t.protected => ctx.confirm(&format!("deploy to {}", ctx.target_label()))?,
        Kind::Deploy => {}
    }
    let script = plan.render(&t.state_dir, &lock.token);
    let pid = runner::start(remote, &t.state_dir, &op_id, &script).await?;
    let outcome = follow_with_interrupts(ctx, remote, &op_id, pid).await;
    if matches!(outcome, Followed::Ended { .. }) {
        let _ = runner::mark_seen(remote, &t.state_dir, &op_id).await;
    }
    report(ctx, &probe, kind, &op_id, outcome)
}

/// The plan in a few lines, for the confirmation and `--dry-run`: both releases as the
/// history knows them, the schema's move, the backup taken first, what is rebuilt and
/// restarted.
fn summary(
    ctx: &Ctx,
    probe: &Probe,
    kind: Kind,
    plan: &runner::Plan,
    history: &[crate::deployed::Record],
) -> crate::summary::Summary {
    let side = |release: &Release| {
        let record = history.iter().find(|r| {
            r.commit == release.commit && (r.result == "deployed" || r.result == "found")
        });
        // A rollback names its target by commit: the history knows the ref it was deployed as.
        let reference = match record {
            Some(r)
                if release.commit.starts_with(&release.reference) && !r.reference.is_empty() =>
            {
                r.reference.clone()
            }
            _ => release.reference.clone(),
        };
        crate::summary::Side {
            reference,
            version: release.version.clone(),
            commit: release.commit.clone(),
            deployed: record.map(|r| (r.result.clone(), r.at.clone(), r.by.clone())),
        }
    };
    let db = probe.db_revision.clone().ok().flatten();
    let schema = match probe.direction() {
        Ok(direction) => {
            crate::summary::schema_move(direction, db.as_deref(), probe.target.migration.as_deref())
        }
        Err(e) => e.to_string(),
    };
    let backup = match plan.forward.iter().find(|s| s.id == "backup") {
        Some(step) => format!("{} (in {})", step.title, ctx.target.backup_dir),
        None => "none: the schema does not move".to_string(),
    };
    let built: Vec<&str> = probe.built.iter().map(|(s, _)| s.as_str()).collect();
    let restart = if plan.forward.iter().any(|s| s.id == "up") {
        format!(
            "compose up -d recreates what changed{}, then the health gate",
            if built.is_empty() {
                String::new()
            } else {
                format!(" (built from the checkout: {})", built.join(", "))
            }
        )
    } else {
        "nothing: the release already runs, health check only".to_string()
    };
    crate::summary::Summary::new(format!("{} {}", kind.name(), ctx.target_label()))
        .row("from", side(&probe.current).describe())
        .row("to", side(&probe.target).describe())
        .row("schema", schema)
        .row("backup", backup)
        .row("restart", restart)
}

fn report(ctx: &Ctx, probe: &Probe, kind: Kind, op_id: &str, followed: Followed) -> Result<Exit> {
    let t = &ctx.target;
    let (outcome, exit, message, steps) = match followed {
        Followed::Ended { outcome, steps, interrupted } => {
            let exit = match outcome.as_str() {
                "deployed" => Exit::Ok,
                "rolled-back" | "failed" if interrupted => Exit::Interrupted,
                "rolled-back" | "failed" => Exit::Failed,
                _ => Exit::Stranded,
            };
            let message = match outcome.as_str() {
                "deployed" => None,
                "rolled-back" => Some(format!("{} of {} failed; {} ({}) runs again; {}", kind.name(), probe.target.reference, probe.current.version, short(&probe.current.commit), failure_summary(&steps))),
                "failed" => Some(format!("{} of {} failed before anything changed; {}", kind.name(), probe.target.reference, failure_summary(&steps))),
                _ => Some(format!("{} of {} failed and so did the automatic rollback: the host needs attention", kind.name(), probe.target.reference)),
            };
            (outcome, exit, message, steps)
        }
        Followed::RunnerDied(steps) => ("interrupted".into(), Exit::Stranded, Some(format!("the runner of {op_id} stopped without finishing: see `ctops status`")), steps),
        Followed::Lost(e, steps) => (
            "unknown".into(),
            Exit::Stranded,
            Some(format!("{e}; the operation {op_id} goes on on the host by itself: `ctops status` reports how it ended")),
            steps,
        ),
        Followed::Abandoned(steps) => (
            "unknown".into(),
            Exit::Stranded,
            Some(format!("stopped watching; the operation {op_id} is rolling back on the host: `ctops status` reports how it ended")),
            steps,
        ),
    };
    let ok = exit == Exit::Ok;
    let doc = Report {
        envelope: super::Envelope::new(kind.name(), ctx, ok),
        op: op_id.to_string(),
        outcome: outcome.clone(),
        from: probe.current.clone(),
        to: probe.target.clone(),
        rolled_back: outcome == "rolled-back",
        steps,
        error: crate::ops::error_object(exit, message.as_ref()),
        state: (!ok).then(|| outcome.clone()),
    };
    if ctx.out.json {
        ctx.out.json_doc(&doc)?;
    }
    match message {
        None => {
            ctx.out.status(format!(
                "{} {} ({}) is live on {}",
                kind.name(),
                probe.target.version,
                short(&probe.target.commit),
                ctx.target_label()
            ));
            Ok(Exit::Ok)
        }
        Some(m) if ctx.out.json => {
            crate::say!("error: {m}");
            Ok(exit)
        }
        Some(m) => {
            crate::say!("error: {m}");
            crate::say!(
                "help: the step logs are in {}/ops/{op_id}/ on the host",
                t.state_dir
            );
            Ok(exit)
        }
    }
}

/// The next command after an operation that ended while nobody watched, or that was cut
/// off, says so. Refuses (exit 4) when that operation's journal has a format this ctops
/// does not know (a newer ctops wrote it).
pub async fn warn_about_last_operation(ctx: &Ctx, remote: &Remote) -> Result<(), Error> {
    if let Ok(Some(last)) = runner::last_operation(remote, &ctx.target.state_dir).await {
        last.known_format(remote.host())?;
        match last.state.as_str() {
            "running" => ctx.out.warn(format!(
                "operation {} ({}) is still running on the host",
                last.id, last.describe
            )),
            "interrupted" => ctx.out.warn(format!(
                "operation {} ({}) was interrupted mid-way: check `ctops status`",
                last.id, last.describe
            )),
            outcome if !last.watched => {
                ctx.out.warn(format!(
                    "operation {} ({}) finished while nobody watched: {outcome} at {}",
                    last.id,
                    last.describe,
                    last.ended.as_deref().unwrap_or("?")
                ));
                let _ = runner::mark_seen(remote, &ctx.target.state_dir, &last.id).await;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changelog_section_of_a_version_is_its_notes() {
        let text = "# Changelog\n\n## [1.27.1] - 2026-01-13\n### Fixed\n- calmer bot\n\n## [1.27.0]\n- older\n";
        assert_eq!(changelog_section(text, "1.27.1"), "### Fixed\n- calmer bot");
        assert_eq!(changelog_section(text, "9.9.9"), "");
    }

    #[test]
    fn refs_are_validated() {
        for ok in ["v1.26.0", "main", "feature/x", "abc123"] {
            validate_ref(ok).unwrap();
        }
        for bad in ["--upload-pack=x", "a..b", "$(id)", "a b", ""] {
            assert!(validate_ref(bad).is_err(), "{bad}");
        }
    }
}
