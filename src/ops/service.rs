//! Runbook 9.1-9.2 and appendix A: the compose verbs (`restart`, `up`, `down`, `rebuild`,
//! `exec`) and `disk`.
//!
//! The verbs that change the host take the host lock; `down` and `rebuild` ask first.
//! `restart` does what the runbook's does (the containers restart with the configuration
//! they were created with: a changed `.env` needs `ctops env set`, which recreates).

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::compose::{validate_service_name, Stack};
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::lock;
use crate::remote::{Remote, RemoteCommand};

/// A compose verb that changes the stack.
pub enum Verb {
    Restart(Vec<String>),
    Up(Vec<String>),
    Down,
    Rebuild,
}

impl Verb {
    fn name(&self) -> &'static str {
        match self {
            Verb::Restart(_) => "restart",
            Verb::Up(_) => "up",
            Verb::Down => "down",
            Verb::Rebuild => "rebuild",
        }
    }

    fn services(&self) -> &[String] {
        match self {
            Verb::Restart(s) | Verb::Up(s) => s,
            Verb::Down | Verb::Rebuild => &[],
        }
    }
}

#[derive(Serialize)]
struct ServiceState {
    service: String,
    state: String,
}

pub async fn run(ctx: &Ctx, verb: Verb) -> Result<Exit> {
    for s in verb.services() {
        validate_service_name(s)?;
    }
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let stack = Stack::load(remote, t).await?;
    let compose = stack.compose(t);
    let commands = match &verb {
        Verb::Restart(s) => vec![compose.restart(s)],
        Verb::Up(s) => vec![compose.up(s, false, false)],
        // Never `down -v`: the volumes hold the database and the object store.
        Verb::Down => vec![compose.down()],
        Verb::Rebuild => vec![
            compose.down(),
            compose.up(&[], false, true).timeout(t.timeouts.build()),
        ],
    };
    let what = match verb.services() {
        [] => format!("{} on {}", verb.name(), ctx.target_label()),
        s => format!("{} {} on {}", verb.name(), s.join(" "), ctx.target_label()),
    };
    if ctx.dry_run {
        for c in &commands {
            ctx.would_run(remote.host(), c);
        }
        return Ok(Exit::Ok);
    }
    if matches!(verb, Verb::Down | Verb::Rebuild) {
        ctx.confirm(&format!("{} (every service stops; volumes are kept)", what))?;
    }
    ctx.out.status(what.clone());
    let done = lock::hold_with(remote, &t.state_dir, verb.name(), |held| {
        run_all(ctx, remote, held, &verb, commands)
    })
    .await;
    if let Err(e) = done {
        return Err(after_failure(remote, t, &stack, e).await.into());
    }
    let after = Stack::load(remote, t).await?;
    let states = stack_states(&after);
    if ctx.out.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            services: Vec<ServiceState>,
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new(verb.name(), ctx, true),
            services: states,
        })?;
    } else {
        ctx.out.status(format!("done: {}", summary(&states)));
    }
    Ok(Exit::Ok)
}

/// Each service of the stack and its container's state ("absent" without one).
fn stack_states(stack: &Stack) -> Vec<ServiceState> {
    states_of(stack, stack.services())
}

/// The state of each of `services` in `stack` ("absent" without a container).
fn states_of(stack: &Stack, services: Vec<String>) -> Vec<ServiceState> {
    services
        .into_iter()
        .map(|service| {
            let state = stack
                .service(&service)
                .map(|c| c.state.clone())
                .next()
                .unwrap_or_else(|| "absent".into());
            ServiceState { service, state }
        })
        .collect()
}

fn summary(states: &[ServiceState]) -> String {
    let parts: Vec<String> = states
        .iter()
        .map(|s| format!("{} {}", s.service, s.state))
        .collect();
    parts.join(", ")
}

/// A verb that failed: exit 6 when the services' states differ from before (a `down` or an
/// `up` that got part-way), with what runs now as the state; else the error as it is.
async fn after_failure(
    remote: &Remote,
    t: &crate::config::Target,
    before: &Stack,
    e: Error,
) -> Error {
    if e.exit != Exit::Failed && e.exit != Exit::Stranded {
        return e;
    }
    let Ok(after) = Stack::load(remote, t).await else {
        return e;
    };
    // Services whose containers are gone (`down`) count as absent now.
    let mut names = before.services();
    names.extend(after.services());
    names.sort();
    names.dedup();
    let (was, now) = (states_of(before, names.clone()), states_of(&after, names));
    let now_text = format!("services now: {}", summary(&now));
    match e.state.clone() {
        Some(state) => e.with_state(format!("{state}; {now_text}")),
        None if summary(&was) != summary(&now) => Error {
            exit: Exit::Stranded,
            state: Some(now_text),
            ..e
        },
        None => e,
    }
}

/// Runs each command in turn under the lock, compose's progress streamed to stderr as it
/// comes. A failure after an earlier command changed the stack (rebuild's `up --build` after
/// its `down`) is exit 6, saying what is where.
async fn run_all(
    ctx: &Ctx,
    remote: &Remote,
    held: lock::Held,
    verb: &Verb,
    commands: Vec<RemoteCommand>,
) -> Result<(), Error> {
    for (done, cmd) in commands.into_iter().enumerate() {
        let what = cmd.label();
        let result = super::run_streamed(ctx, remote, &held.wrap(cmd), &what).await;
        match result {
            Ok(()) => {}
            Err(e) if done > 0 && matches!(verb, Verb::Rebuild) => {
                return Err(Error::stranded(
                    format!("rebuild failed part-way: {}", e.message),
                    "down: the stack was stopped by `down` and not started again (volumes kept)",
                )
                .with_help(
                    "fix the build (the output above says why), then `ctops up` or `ctops rebuild`; `ctops status` shows what runs",
                ))
            }
            Err(e) => {
                return Err(e.with_help(
                    "ctops status shows what runs now; ctops logs SERVICE shows why",
                ))
            }
        }
    }
    Ok(())
}

/// `exec SERVICE -- CMD...`: runs in the service's container, stdin and stdout passed
/// through; a failing command is exit 1 with its status named. With `tty` (`-it`), a
/// terminal session instead.
pub async fn exec(ctx: &Ctx, service: &str, argv: &[String], tty: bool) -> Result<Exit> {
    validate_service_name(service)?;
    if argv.is_empty() {
        return Err(Error::usage("exec needs a command: ctops exec SERVICE -- CMD...").into());
    }
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let stack = Stack::load(remote, t).await?;
    if tty {
        return exec_on_a_terminal(
            ctx,
            remote,
            stack.compose(t).exec_tty(service, argv),
            argv,
            service,
        )
        .await;
    }
    // Piped input goes through; a terminal's does not (`exec -T` has no TTY to give it).
    let with_stdin = !std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut cmd = stack.compose(t).exec(service, argv);
    if !with_stdin {
        cmd = cmd.stop_on_disconnect();
    }
    if ctx.dry_run {
        ctx.would_run(remote.host(), &cmd);
        return Ok(Exit::Ok);
    }
    let status = remote.pipe_through(&cmd, with_stdin).await?;
    if status == 0 {
        Ok(Exit::Ok)
    } else {
        Err(Error::failed(format!("`{}` exited {status} in {service}", argv.join(" "))).into())
    }
}

/// `exec -it`: the command on a PTY of its own, over the same SSH connection.
async fn exec_on_a_terminal(
    ctx: &Ctx,
    remote: &Remote,
    cmd: RemoteCommand,
    argv: &[String],
    service: &str,
) -> Result<Exit> {
    if ctx.dry_run {
        ctx.would_run(remote.host(), &cmd);
        return Ok(Exit::Ok);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(
            Error::usage("exec -t needs a terminal: this stdin is not one")
                .with_help("drop -it to pipe input through (ctops exec SERVICE -- CMD < file)")
                .into(),
        );
    }
    match remote.interactive(&cmd).await? {
        0 => Ok(Exit::Ok),
        status => {
            Err(Error::failed(format!("`{}` exited {status} in {service}", argv.join(" "))).into())
        }
    }
}

/// `disk`: `df -h`, Docker's own accounting (`system df`), and the largest container logs
/// (runbook 9.1's `du -sh /var/lib/docker/containers/*`, through `sudo -n` when the user
/// cannot read Docker's directory; the log sizes come from `docker inspect` otherwise).
const DISK: &str = include_str!("../scripts/disk.sh");

pub async fn disk(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let out = super::run_step(
        remote,
        &RemoteCommand::sh(DISK, Vec::<String>::new()).read_only(),
        "reading disk usage",
    )
    .await?
    .stdout_text();
    let mut parts = out.split("\n--\n");
    let (df, docker, logs) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let logs: Vec<(String, String)> = logs
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(size, name)| (size.to_string(), name.to_string()))
        .collect();
    if ctx.out.json {
        #[derive(Serialize)]
        struct Log {
            container: String,
            bytes: Option<u64>,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            df: &'a str,
            docker: &'a str,
            logs: Vec<Log>,
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("disk", ctx, true),
            df: df.trim_end(),
            docker: docker.trim_end(),
            logs: logs
                .into_iter()
                .map(|(size, container)| Log {
                    container,
                    bytes: size.parse().ok(),
                })
                .collect(),
        })?;
        return Ok(Exit::Ok);
    }
    let rows = logs
        .into_iter()
        .map(|(size, name)| vec![human_bytes(&size), name])
        .collect();
    ctx.out.print(&format!(
        "{}\n\n{}\n\nlargest container logs:\n{}",
        df.trim_end(),
        docker.trim_end(),
        ctx.out.table(&["SIZE", "CONTAINER"], rows)
    ))?;
    Ok(Exit::Ok)
}

/// The last `n` lines of a command's stderr, for a message.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

fn human_bytes(raw: &str) -> String {
    let Ok(mut n) = raw.parse::<f64>() else {
        return raw.to_string();
    };
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if n < 1024.0 {
            return format!("{n:.0} {unit}");
        }
        n /= 1024.0;
    }
    format!("{n:.1} TiB")
}

/// `state project keep prefix`: what `docker system prune -af` removes, except the images of
/// the last `keep` releases (tagged PREFIX + their commit by deploy, for fast rollback) and
/// the project's stopped containers; prints the images removed, then `freed BYTES`.
const PRUNE: &str = include_str!("../scripts/prune.sh");

/// `prune` (runbook 9.1): Docker's unused data removed after confirmation, keeping what a
/// rollback needs.
pub async fn prune(ctx: &Ctx) -> Result<Exit> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let stack = Stack::load(remote, t).await?;
    let project = stack.project.clone().unwrap_or_default();
    let keep = t.deploy.keep_releases.unwrap_or(5);
    let cmd = RemoteCommand::sh(
        PRUNE,
        [
            t.state_dir.clone(),
            project,
            keep.to_string(),
            crate::deployed::RELEASE_TAG_PREFIX.to_string(),
        ],
    )
    .timeout(std::time::Duration::from_secs(1800));
    if ctx.dry_run {
        ctx.would_run(remote.host(), &cmd);
        return Ok(Exit::Ok);
    }
    ctx.confirm(&format!(
        "remove unused Docker images, stopped containers, networks and build cache on {} (keeping the images of the last {keep} releases and all volumes)",
        ctx.target_label()
    ))?;
    let out = lock::hold_with(remote, &t.state_dir, "prune", |held| async move {
        remote.run(&held.wrap(cmd)).await
    })
    .await?;
    if out.status != 0 {
        // Some images may be gone already: only unused ones, so nothing runs differently.
        return Err(Error::failed(format!(
            "prune failed on {}: {}",
            remote.host(),
            last_lines(&out.stderr_text(), 5)
        ))
        .into());
    }
    let text = out.stdout_text();
    let removed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("removed\t"))
        .collect();
    let freed: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("freed\t"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if ctx.out.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            removed: &'a [&'a str],
            freed_bytes: i64,
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("prune", ctx, true),
            removed: &removed,
            freed_bytes: freed,
        })?;
    } else {
        for r in &removed {
            ctx.out.status(format!("removed {r}"));
        }
        ctx.out.status(format!(
            "freed {} on {} ({} images removed; the last {keep} releases' images kept)",
            human_bytes(&freed.max(0).to_string()),
            remote.host(),
            removed.len()
        ));
    }
    Ok(Exit::Ok)
}
