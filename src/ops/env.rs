//! Runbook 7.4, `env`: reading and changing `.env` on the host.
//!
//! The runbook edits `.env` and runs `compose restart`, which does not re-read it: the old
//! value stays in the containers and the health check passes on it. ctops recreates the
//! services instead (`compose up -d [--no-deps SVC...]`). Every change copies the current
//! file first (the copies `backup env` keeps), replaces it atomically with its mode and
//! owner, keeps comments and order, recreates, runs the health gate, and puts the previous
//! file back (and recreates again) if anything fails. Values are never printed unless one
//! is asked for by name (`env get`), never put on a remote command line (they travel on
//! stdin), and never logged.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use super::Envelope;
use crate::cli::EnvCommand;
use crate::compose::validate_service_name;
use crate::context::Ctx;
use crate::envchange::{apply, env_path, read, read_for_change, Change, Read, Source};
use crate::envfile::{self, EnvFile};
use crate::error::{Error, Exit};
use crate::remote::RemoteCommand;

pub async fn run(ctx: &Ctx, command: &EnvCommand) -> Result<Exit> {
    match command {
        EnvCommand::List => list(ctx).await,
        EnvCommand::Get { key } => get(ctx, key).await,
        EnvCommand::Diff { backup } => diff(ctx, backup).await,
        EnvCommand::Set {
            assignments,
            restart,
        } => {
            let pairs = assignments_of(assignments)?;
            let read = read_for_change(ctx).await?;
            let mut file = read.file.clone();
            let mut keys = Vec::new();
            for (key, value) in pairs {
                file.set(key, value)
                    .map_err(|e| Error::usage(format!("{key}: {e}")))?;
                keys.push(key.to_string());
            }
            change(ctx, "env set", &read, file, restart, &keys).await
        }
        EnvCommand::Unset { keys, restart } => {
            check_input(command)?;
            let read = read_for_change(ctx).await?;
            let mut file = read.file.clone();
            // All or nothing: one key that is not set refuses the whole change.
            for key in keys {
                if !file.unset(key) {
                    return Err(
                        Error::usage(format!("{key} is not set in {}", env_path(ctx))).into(),
                    );
                }
            }
            change(ctx, "env unset", &read, file, restart, keys).await
        }
        EnvCommand::Edit { restart } => edit(ctx, restart).await,
    }
}

/// What can be refused from the arguments alone, before anything is asked of the host: keys
/// that cannot be keys, assignments the `.env` writer would refuse (checked on an empty file).
pub fn check_input(command: &EnvCommand) -> Result<(), Error> {
    match command {
        EnvCommand::Get { key } => check_key(key),
        EnvCommand::Set { assignments, .. } => assignments_of(assignments).map(|_| ()),
        EnvCommand::Unset { keys, .. } => keys.iter().try_for_each(|k| check_key(k)),
        EnvCommand::Diff { backup } => crate::catalog::validate_name(backup),
        EnvCommand::List | EnvCommand::Edit { .. } => Ok(()),
    }
}

/// `KEY=VALUE` arguments as pairs, each checked on an empty file.
fn assignments_of(assignments: &[String]) -> Result<Vec<(&str, &str)>, Error> {
    let mut pairs = Vec::new();
    for a in assignments {
        let (key, value) = a
            .split_once('=')
            .ok_or_else(|| Error::usage(format!("{:?} is not KEY=VALUE", redact(a))))?;
        check_key(key)?;
        EnvFile::parse("")
            .set(key, value)
            .map_err(|e| Error::usage(format!("{key}: {e}")))?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn check_key(key: &str) -> Result<(), Error> {
    if envfile::valid_key(key) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid key {key:?}: letters, digits and _ only"
        )))
    }
}

/// `KEY=VALUE` with the value hidden, for messages about a malformed argument.
fn redact(arg: &str) -> String {
    match arg.split_once('=') {
        Some((k, _)) => format!("{k}=…"),
        None if arg.chars().count() > 24 => format!("{}…", arg.chars().take(8).collect::<String>()),
        None => arg.to_string(),
    }
}

#[derive(Serialize)]
struct KeyRow {
    key: String,
    value: String,
}

async fn list(ctx: &Ctx) -> Result<Exit> {
    let file = read(ctx).await?;
    let rows: Vec<KeyRow> = file
        .entries()
        .into_iter()
        .map(|(key, value)| KeyRow {
            key,
            value: envfile::mask(&value),
        })
        .collect();
    if ctx.out.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            keys: Vec<KeyRow>,
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("env list", ctx, true),
            keys: rows,
        })?;
        return Ok(Exit::Ok);
    }
    let table = rows.into_iter().map(|r| vec![r.key, r.value]).collect();
    ctx.out.print(&ctx.out.table(&["KEY", "VALUE"], table))?;
    Ok(Exit::Ok)
}

async fn get(ctx: &Ctx, key: &str) -> Result<Exit> {
    check_key(key)?;
    let file = read(ctx).await?;
    let value = file.get(key).ok_or_else(|| {
        Error::failed(format!("{key} is not set in {}", env_path(ctx)))
            .with_help("ctops env list shows the keys")
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    Ok(Exit::Ok)
}

async fn diff(ctx: &Ctx, backup: &str) -> Result<Exit> {
    crate::catalog::validate_name(backup)?;
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    // The copy's path on the first line, then its contents; read beside the current file.
    let find_and_read = RemoteCommand::sh(
        &format!("{}\ncat \"$dir/$name\"", crate::catalog::FIND_ENV),
        [t.backup_dir.as_str(), backup],
    )
    .read_only();
    let (copy, current) = tokio::join!(
        crate::catalog::run_lookup(remote, &find_and_read),
        read(ctx)
    );
    let copy = copy?.stdout_text();
    let (path, old) = copy.split_once('\n').unwrap_or((copy.as_str(), ""));
    let changes = envfile::diff(&EnvFile::parse(old), &current?);
    let name = path.rsplit('/').next().unwrap_or(path);
    if ctx.out.json {
        #[derive(Serialize)]
        struct Change {
            key: String,
            change: &'static str,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            backup: &'a str,
            changes: Vec<Change>,
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("env diff", ctx, true),
            backup: name,
            changes: changes
                .into_iter()
                .map(|(key, change)| Change { key, change })
                .collect(),
        })?;
        return Ok(Exit::Ok);
    }
    ctx.out.status(format!(
        "{} now, against {name} (values not shown)",
        t.env_file
    ));
    if changes.is_empty() {
        ctx.out.status("no differences");
    }
    let mut out = String::new();
    for (key, change) in changes {
        let sign = match change {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        out.push_str(&format!("{sign} {key} ({change})\n"));
    }
    ctx.out.print(out.trim_end())?;
    Ok(Exit::Ok)
}

/// `env edit`: `$EDITOR` on a private local copy; the result validated, then applied.
async fn edit(ctx: &Ctx, restart: &[String]) -> Result<Exit> {
    use std::os::unix::fs::PermissionsExt;
    let read = read_for_change(ctx).await?;
    let before = &read.file;
    let dir = tempfile::Builder::new().prefix("ctops-env-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    let path = dir.path().join(".env");
    std::fs::write(&path, before.render())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    // The editor may carry arguments (`code --wait`): let the local shell split it.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("ctops")
        .arg(&path)
        .status()
        .map_err(|e| Error::failed(format!("cannot start the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(
            Error::failed(format!("the editor exited with {status}; nothing changed")).into(),
        );
    }
    let text = std::fs::read_to_string(&path)?;
    envfile::validate(&text).map_err(|e| {
        Error::usage(format!(
            "the edited file is not valid: {e}; nothing changed"
        ))
    })?;
    let after = EnvFile::parse(&text);
    let keys: Vec<String> = envfile::diff(before, &after)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    change(ctx, "env edit", &read, after, restart, &keys).await
}

/// Applies `after` in place of `before`: the services to recreate are `--restart`, else the
/// `[secrets]` entries of the changed keys, else whichever compose finds changed.
async fn change(
    ctx: &Ctx,
    command: &'static str,
    read: &Read,
    after: EnvFile,
    restart: &[String],
    keys: &[String],
) -> Result<Exit> {
    let before = &read.file;
    if before.render() == after.render() {
        ctx.out
            .status(format!("{} unchanged: nothing to do", ctx.target.env_file));
        return Ok(Exit::Ok);
    }
    for s in restart {
        validate_service_name(s)?;
    }
    let mut services: Vec<String> = restart.to_vec();
    if services.is_empty() {
        let from_secrets: BTreeSet<String> = keys
            .iter()
            .filter_map(|k| ctx.target.secrets.get(k))
            .flat_map(|s| s.restart.iter().cloned())
            .collect();
        services = from_secrets.into_iter().collect();
    }
    let changed: Vec<String> = envfile::diff(before, &after)
        .into_iter()
        .map(|(k, c)| format!("{k} ({c})"))
        .collect();
    // SPEC: env changes ask first on a protected target (production).
    if ctx.target.protected && !ctx.dry_run {
        ctx.confirm(&format!(
            "change {} on {}: {}",
            ctx.target.env_file,
            ctx.target_label(),
            changed.join(", ")
        ))?;
    }
    let mut change = Change::new(
        command,
        format!("{command} {}", changed.join(", ")),
        Source::Upload(after.render().into_bytes()),
        services,
    );
    change.expect_sha256 = Some(read.sha256.clone());
    apply(ctx, change).await
}
