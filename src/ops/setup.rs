//! `ctops setup`: prepares a fresh host once, idempotently, for the operators' logins: the
//! shared state dir and backup dir, the login's group membership, the checkout shared with
//! the group, and checks of Docker, compose v2 and the checkout's git remote.
//!
//! What needs root runs through the target's `sudo` prefix; what it cannot do (no rule, a
//! missing package) it reports with the exact command a person runs as root. It opens a
//! second connection after a change, because a new group membership takes effect only at
//! the next login: Docker, compose and git are checked as the next command will find them.

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::context::Ctx;
use crate::error::Exit;
use crate::hostprep::{self, Facts, Fix};
use crate::remote::{Remote, RemoteCommand};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    /// It was so already.
    Ok,
    /// Setup made it so.
    Done,
    /// `--dry-run`: setup would make it so.
    Would,
    /// It is not so and setup could not make it so: a person must (see `command`).
    Todo,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    name: &'static str,
    status: Status,
    detail: String,
    /// The command a person runs as root on the host: what setup ran, would run, or could
    /// not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
}

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    changed: bool,
    steps: &'a [Row],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
}

/// A fact setup can make hold, and how.
struct Step {
    name: &'static str,
    key: &'static str,
    what: String,
    fix: Option<Fix>,
}

pub async fn run(ctx: &Ctx) -> Result<Exit> {
    let t = &ctx.target;
    let first = Remote::connect(t, &ctx.out, ctx.dry_run).await?;
    let facts = hostprep::probe(&first, t, true).await?;
    let mut rows = Vec::new();
    for step in steps(ctx, &facts) {
        rows.push(apply(ctx, &first, &facts, step).await);
    }
    let changed = rows.iter().any(|r| r.status == Status::Done);
    let facts = if changed {
        // A new group membership counts from the next login: check as the next command
        // will find the host.
        first.close().await;
        ctx.out
            .status("reconnecting: a new group membership counts from the next login");
        let again = Remote::connect(t, &ctx.out, ctx.dry_run).await?;
        let facts = hostprep::probe(&again, t, true).await;
        again.close().await;
        let facts = facts?;
        for row in &mut rows {
            recheck(row, &facts);
        }
        facts
    } else {
        first.close().await;
        facts
    };
    rows.extend(checks(ctx, &facts));
    report(ctx, &rows)
}

/// The facts setup makes hold, in order (the group before the folders it owns).
fn steps(ctx: &Ctx, facts: &Facts) -> Vec<Step> {
    let t = &ctx.target;
    let exists = |key: &str| facts.get(key) != "missing";
    let checkout_fix = exists("checkout").then(|| hostprep::checkout(t));
    vec![
        Step {
            name: "group",
            key: "group",
            what: format!("group `{}` exists", t.group),
            fix: Some(hostprep::group(t)),
        },
        Step {
            name: "membership",
            key: "member",
            what: format!("{} is in group `{}`", facts.user(), t.group),
            fix: Some(hostprep::member(t, facts.user())),
        },
        Step {
            name: "state_dir",
            key: "state",
            what: format!("{} is 2770, group `{}`", t.state_dir, t.group),
            fix: Some(hostprep::state_dir(t, exists("state"))),
        },
        Step {
            name: "backup_dir",
            key: "backup",
            what: format!("{} is 2770, group `{}`", t.backup_dir, t.group),
            fix: Some(hostprep::backup_dir(t, exists("backup"))),
        },
        Step {
            name: "checkout",
            key: "checkout",
            what: format!("{} is shared with group `{}`", t.dir, t.group),
            fix: checkout_fix,
        },
        Step {
            name: "safe.directory",
            key: "safe",
            what: format!("git trusts {} for every login", t.dir),
            fix: Some(hostprep::safe_directory(t)),
        },
    ]
}

/// Makes one fact hold (or says what would, or who must).
async fn apply(ctx: &Ctx, remote: &Remote, facts: &Facts, step: Step) -> Row {
    let mut row = Row {
        name: step.name,
        status: Status::Ok,
        detail: step.what.clone(),
        command: None,
    };
    if facts.ok(step.key) {
        return row;
    }
    let found = facts.get(step.key).to_string();
    let Some(fix) = step.fix else {
        row.status = Status::Todo;
        row.detail = format!("{}: {found}", step.what);
        return row;
    };
    row.command = Some(fix.as_root());
    if ctx.dry_run {
        row.status = Status::Would;
        row.detail = format!("{} ({found})", step.what);
        return row;
    }
    match run_fix(ctx, remote, &fix).await {
        Ok(()) => {
            row.status = Status::Done;
            row.detail = format!("{} (was: {found})", step.what);
        }
        Err(why) => {
            row.status = Status::Todo;
            row.detail = format!("{}: {found}; could not make it so: {why}", step.what);
        }
    }
    row
}

/// Runs a fix's commands in order through the `sudo` prefix; the first failure's stderr.
async fn run_fix(ctx: &Ctx, remote: &Remote, fix: &Fix) -> Result<(), String> {
    for argv in &fix.commands {
        let cmd = RemoteCommand::new(argv.clone()).wrapped(&ctx.target.sudo);
        let out = remote.run(&cmd).await.map_err(|e| e.to_string())?;
        if out.status != 0 {
            let stderr = out.stderr_text();
            let last = stderr.trim().lines().last().unwrap_or_default().to_string();
            return Err(format!("`{}` exited {}: {last}", cmd.label(), out.status));
        }
    }
    Ok(())
}

/// After the reconnection: a fix that ran but did not make its fact hold is not done.
fn recheck(row: &mut Row, facts: &Facts) {
    let key = match row.name {
        "group" => "group",
        "membership" => "member",
        "state_dir" => "state",
        "backup_dir" => "backup",
        "checkout" => "checkout",
        "safe.directory" => "safe",
        _ => return,
    };
    if row.status == Status::Done && !facts.ok(key) {
        row.status = Status::Todo;
        row.detail = format!("{}; still: {}", row.detail, facts.get(key));
    }
}

/// Docker, compose v2 and the git remote, as the next command finds them: checked, never
/// changed (an install or a key is a person's decision).
fn checks(ctx: &Ctx, facts: &Facts) -> Vec<Row> {
    let t = &ctx.target;
    let user = facts.user();
    let row = |name, ok: bool, detail: String, command: Option<String>| Row {
        name,
        status: if ok { Status::Ok } else { Status::Todo },
        detail,
        command: if ok { None } else { command },
    };
    let docker_fix = if facts.ok("member") {
        "systemctl start docker".to_string()
    } else {
        hostprep::member(t, user).as_root()
    };
    vec![
        row(
            "docker",
            facts.ok("docker"),
            format!("{user} can use Docker: {}", facts.get("docker")),
            Some(docker_fix),
        ),
        row(
            "compose",
            facts.ok("compose"),
            format!(
                "`{}` is compose v2: {}",
                t.compose.join(" "),
                facts.get("compose")
            ),
            Some("apt-get install docker-compose-plugin".into()),
        ),
        row(
            "git remote",
            facts.ok("remote"),
            if facts.ok("remote") {
                format!("{user} reaches the checkout's origin without a prompt")
            } else {
                format!(
                    "{user} cannot reach the checkout's origin without a prompt: {}; give {user} read access (a deploy key), then try `git -C {} ls-remote origin HEAD` as {user}",
                    facts.get("remote"),
                    crate::remote::quote(&t.dir)
                )
            },
            None,
        ),
    ]
}

fn report(ctx: &Ctx, rows: &[Row]) -> Result<Exit> {
    let changed = rows.iter().any(|r| r.status == Status::Done);
    let todo: Vec<&Row> = rows.iter().filter(|r| r.status == Status::Todo).collect();
    let host = ctx.target_label();
    let summary = if !todo.is_empty() {
        let names: Vec<&str> = todo.iter().map(|r| r.name).collect();
        format!(
            "{host} is not ready: {} need a person (commands to run as root above)",
            names.join(", ")
        )
    } else if ctx.dry_run {
        format!("dry run: nothing was changed on {host}")
    } else if changed {
        format!("{host} is ready: setup changed what is marked done")
    } else {
        format!("{host} is ready: setup changed nothing (everything was in place)")
    };
    let exit = if todo.is_empty() {
        Exit::Ok
    } else {
        Exit::Refused
    };
    if ctx.out.json {
        let done: Vec<&str> = rows
            .iter()
            .filter(|r| r.status == Status::Done)
            .map(|r| r.name)
            .collect();
        let state = (!todo.is_empty()).then(|| {
            if done.is_empty() {
                "unchanged".to_string()
            } else {
                format!("changed: {}", done.join(", "))
            }
        });
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("setup", ctx, todo.is_empty()),
            changed,
            steps: rows,
            error: super::error_object(exit, (!todo.is_empty()).then_some(&summary)),
            state,
        })?;
        return Ok(exit);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mark = match r.status {
                Status::Ok => "ok",
                Status::Done => "done",
                Status::Would => "would",
                Status::Todo => "TODO",
            };
            vec![mark.to_string(), r.name.to_string(), r.detail.clone()]
        })
        .collect();
    ctx.out
        .print(&ctx.out.table(&["", "step", "detail"], table))?;
    for r in rows {
        let label = match r.status {
            Status::Done => "ran as root",
            Status::Would => "would run as root",
            Status::Todo => "run as root",
            Status::Ok => continue,
        };
        if let Some(command) = &r.command {
            ctx.out.print(&format!("{} ({label}): {command}", r.name))?;
        }
    }
    if exit == Exit::Ok {
        ctx.out.status(summary);
    } else {
        crate::say!("error: {summary}");
    }
    Ok(exit)
}
