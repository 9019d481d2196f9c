//! Following a detached runner on the host to its end (Ctrl-C asks it to roll back), and the
//! variables of its health gate: what deploy, rollback, restore, `.env` changes and updates
//! share once their plan is built.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;

use crate::context::Ctx;
use crate::error::Error;
use crate::lock::HostLock;
use crate::remote::Remote;
use crate::runner::{self, Event, Plan};

/// The variables the runner's `gate` and `container_of` read (plain values: the plan
/// renders them quoted).
pub fn gate_vars(t: &crate::config::Target, project: &str) -> Vec<(&'static str, String)> {
    let secs = |d: Option<crate::config::HumanDuration>, default: u64| {
        d.map(|d| d.0.as_secs()).unwrap_or(default).to_string()
    };
    let interval = t
        .deploy
        .health_interval
        .map(|d| d.0.as_secs_f64())
        .unwrap_or(1.0);
    vec![
        ("P", project.to_string()),
        // Fetched on the host: what the host reaches, which may not be what `health` reaches.
        ("HEALTH_URL", t.gate_url().to_string()),
        ("HEALTH_TIMEOUT", secs(t.deploy.health_timeout, 60)),
        ("HEALTH_INTERVAL", format!("{interval}")),
        ("STABLE_FOR", secs(t.deploy.stable_for, 10)),
    ]
}

/// The plan step that dumps the database (deploy's and rollback's, before a migration): its
/// spinner counts bytes.
const DUMP_STEP: &str = "backup";

/// What following the runner came to.
pub enum Followed {
    Ended {
        outcome: String,
        steps: Vec<Event>,
        interrupted: bool,
    },
    RunnerDied(Vec<Event>),
    Lost(Error, Vec<Event>),
    Abandoned(Vec<Event>),
}

/// Streams the journal, printing each step with its elapsed time. The first Ctrl-C (or
/// SIGTERM/SIGHUP) asks the runner to stop after the current step and roll back; a second
/// stops watching at once.
pub async fn follow_with_interrupts(ctx: &Ctx, remote: &Remote, op_id: &str, pid: u32) -> Followed {
    let t = &ctx.target;
    let mut steps: Vec<Event> = Vec::new();
    let mut started: BTreeMap<String, u64> = BTreeMap::new();
    let wall = Instant::now();
    let fault = std::env::var("CTOPS_FAULT").ok();
    let (fault_tx, mut fault_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // On a terminal, a spinner with the step's elapsed time under its `…` line; under the
    // database backup, with the bytes dumped so far too (asked of the host while it runs).
    let spinner = RefCell::new(crate::output::Spinner::default());
    let dumping = Cell::new(false);
    let print = |e: &Event| {
        match e.kind.as_str() {
            "start" => {
                spinner.borrow_mut().finish();
                started.insert(e.step.clone(), e.millis);
                ctx.out.status(format!("  … {}", e.detail));
                dumping.set(e.step == DUMP_STEP);
                *spinner.borrow_mut() = if dumping.get() {
                    ctx.out.byte_bar(e.step.clone(), None)
                } else {
                    ctx.out.spinner(e.step.clone())
                };
                if fault.as_deref() == Some(&format!("disconnect-at:{}", e.step)) {
                    let _ = fault_tx.send(());
                }
            }
            "ok" | "fail" => {
                dumping.set(false);
                spinner.borrow_mut().finish();
                let took = started
                    .get(&e.step)
                    .map(|s| e.millis.saturating_sub(*s))
                    .unwrap_or(0);
                let detail = if e.kind == "fail" {
                    format!(": {}", e.detail)
                } else {
                    String::new()
                };
                ctx.out.status(format!(
                    "  {} {} ({:.1}s){detail}",
                    ctx.out.mark(e.kind == "ok"),
                    e.step,
                    took as f64 / 1000.0
                ));
            }
            "note" if e.step.starts_with("notification failed") => {
                spinner.borrow().suspend(|| ctx.out.warn(&e.step))
            }
            "note" => spinner
                .borrow()
                .suspend(|| ctx.out.status(format!("  note: {}", e.step))),
            _ => {}
        }
        steps.push(e.clone());
    };
    let mut interrupted = false;
    let mut abandoned = false;
    let result = {
        let follow = runner::follow(remote, &t.state_dir, op_id, pid, ctx.out.verbose > 0, print);
        tokio::pin!(follow);
        let dump_progress = async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                if dumping.get() && spinner.borrow().is_shown() {
                    if let Some(bytes) = crate::catalog::dumped_bytes(remote, t).await {
                        spinner.borrow().set_position(bytes);
                    }
                }
            }
        };
        tokio::pin!(dump_progress);
        loop {
            tokio::select! {
                result = &mut follow => break result,
                _ = &mut dump_progress => unreachable!("polling never ends on its own"),
                _ = crate::signals::interrupted() => {
                    if interrupted {
                        abandoned = true;
                        break Ok(None);
                    }
                    interrupted = true;
                    ctx.out.status("interrupt: the current step finishes, then the host is rolled back (Ctrl-C again to stop watching)");
                    if let Err(e) = runner::request_abort(remote, &t.state_dir, op_id).await {
                        ctx.out.warn(format!("could not ask the runner to stop: {e}"));
                    }
                }
                Some(()) = fault_rx.recv() => {
                    ctx.out.warn("fault injection: dropping the SSH connection");
                    remote.kill_master();
                }
            }
        }
    };
    tracing::debug!(elapsed = ?wall.elapsed(), "followed the runner");
    match result {
        _ if abandoned => Followed::Abandoned(steps),
        Ok(Some(outcome)) => Followed::Ended {
            outcome,
            steps,
            interrupted,
        },
        Ok(None) => Followed::RunnerDied(steps),
        Err(e) => Followed::Lost(e, steps),
    }
}

/// Runs `plan` on the host, detached, and follows its journal: `(outcome, steps,
/// interrupted)`, the outcome `unknown` or `interrupted` when it did not end cleanly.
pub async fn execute(
    ctx: &Ctx,
    remote: &Remote,
    plan: &Plan,
    lock: &HostLock,
) -> Result<(String, Vec<Event>, bool)> {
    let state_dir = &ctx.target.state_dir;
    let script = plan.render(state_dir, &lock.token);
    let pid = runner::start(remote, state_dir, &plan.op_id, &script).await?;
    let followed = follow_with_interrupts(ctx, remote, &plan.op_id, pid).await;
    let (outcome, steps, interrupted) = match followed {
        Followed::Ended {
            outcome,
            steps,
            interrupted,
        } => (outcome, steps, interrupted),
        Followed::RunnerDied(steps) => ("interrupted".to_string(), steps, false),
        Followed::Lost(_, steps) | Followed::Abandoned(steps) => {
            ("unknown".to_string(), steps, false)
        }
    };
    if outcome != "unknown" && outcome != "interrupted" {
        let _ = runner::mark_seen(remote, state_dir, &plan.op_id).await;
    }
    Ok((outcome, steps, interrupted))
}

/// What the journal says a failed operation did: the step that failed (with the last lines
/// of its log), then the undo steps that ran and how each ended. Messages are built from it,
/// so they never claim a gate that did not run or an undo that did not happen.
pub fn failure_summary(steps: &[Event]) -> String {
    let Some(at) = steps.iter().position(|e| e.kind == "fail") else {
        return "no step failed".to_string();
    };
    let failed = &steps[at];
    let mut text = format!("step `{}` failed", failed.step);
    let why = failed.detail.trim();
    if !why.is_empty() {
        text.push_str(&format!(" ({})", shorten(why, 160)));
    }
    let title = |id: &str| {
        steps
            .iter()
            .find(|e| e.kind == "start" && e.step == id)
            .map(|e| e.detail.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let undone: Vec<String> = steps[at + 1..]
        .iter()
        .filter(|e| e.kind == "ok" || e.kind == "fail")
        .map(|e| match e.kind.as_str() {
            "ok" => title(&e.step),
            _ => format!("{} (FAILED)", title(&e.step)),
        })
        .collect();
    if undone.is_empty() {
        text.push_str("; nothing needed undoing");
    } else {
        text.push_str(&format!("; undone: {}", undone.join(", ")));
    }
    text
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, step: &str, detail: &str) -> Event {
        Event {
            at: String::new(),
            millis: 0,
            kind: kind.into(),
            step: step.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn a_failure_names_its_step_and_only_the_undo_that_ran() {
        // `update images` with no registry: `pull` fails, the images are tagged back, no
        // service was recreated and no gate ran.
        let steps = [
            event("start", "pull", "pull the images"),
            event("fail", "pull", "exit 1: registry unreachable"),
            event("start", "retag", "tag the previous images back"),
            event("ok", "retag", ""),
        ];
        let text = failure_summary(&steps);
        assert_eq!(
            text,
            "step `pull` failed (exit 1: registry unreachable); undone: tag the previous images back"
        );
        assert!(!text.contains("gate") && !text.contains("recreate"));

        let steps = [event("start", "build", "build"), event("fail", "build", "")];
        assert_eq!(
            failure_summary(&steps),
            "step `build` failed; nothing needed undoing"
        );

        let steps = [
            event("start", "gate", "health gate"),
            event("fail", "gate", "exit 1: /health is 503"),
            event(
                "start",
                "recreate_back",
                "recreate the services on the previous images",
            ),
            event("fail", "recreate_back", "exit 1"),
        ];
        assert!(failure_summary(&steps)
            .ends_with("undone: recreate the services on the previous images (FAILED)"));
    }
}
