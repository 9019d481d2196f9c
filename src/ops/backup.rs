//! Runbook 5.1-5.2, `backup`: PostgreSQL dumps that cannot be mistaken for complete when they
//! are not, and copies of `.env`.
//!
//! The runbook's `pg_dump ... > /opt/backups/db_$(date +%Y%m%d).sql` leaves a partial file
//! that looks like a backup when the dump is killed, expands `$(date)` on the operator's
//! laptop in local time, and overwrites same-day dumps. ctops checks free space first, writes
//! under a temporary name, flushes, renames, and writes a manifest last (sha256, size, UTC
//! time from the host, migration revision, per-table row counts taken inside the dump's own
//! snapshot): the manifest is what makes a backup count.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Envelope;
use crate::catalog::{
    db_backup_command, env_backup_command, host_db_backups, is_qualified_table, is_sha256, local,
    printable, to_prune, with_db_address, with_dump_progress, Listed, Manifest, LIST,
};
use crate::cli::{BackupCommand, BackupFormat};
use crate::compose::working_dir;
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::output::Styled;
use crate::remote::{Remote, RemoteCommand};

/// Exit status of the backup script when the backup dir lacks space.
const NO_SPACE: i32 = 75;

#[derive(Serialize)]
struct BackupDoc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    backups: Vec<Listed>,
}

/// What can be refused from the arguments alone, before anything is asked of the host.
pub fn check_input(command: &BackupCommand) -> Result<(), Error> {
    match command {
        BackupCommand::Verify { name } => crate::catalog::validate_name(name),
        _ => Ok(()),
    }
}

pub async fn run(ctx: &Ctx, command: &BackupCommand) -> Result<Exit> {
    match command {
        BackupCommand::Db { download, format } => {
            let listed = backup_db(ctx, *format, *download).await?;
            report(ctx, "backup db", listed)
        }
        BackupCommand::Minio => {
            let listed = crate::snapshots::backup(ctx).await?;
            report(ctx, "backup minio", listed)
        }
        BackupCommand::Env => {
            let listed = backup_env(ctx, true).await?;
            report(ctx, "backup env", listed)
        }
        BackupCommand::List => list(ctx).await,
        BackupCommand::Verify { name } => verify(ctx, name).await,
        BackupCommand::Prune => {
            let pruned = prune(ctx, true).await?;
            report(ctx, "backup prune", pruned)
        }
        BackupCommand::All => all(ctx).await,
    }
}

/// `backup all`, for cron: the database (also copied to `local_dir`), the buckets (when
/// any are configured), then `.env`, then
/// pruning, which happens only
/// after the backup succeeded. Silent on success (unless `-v`); one line on stderr and exit
/// 1 on failure; everything within `timeouts.backup`.
async fn all(ctx: &Ctx) -> Result<Exit> {
    let deadline = ctx
        .target
        .timeouts
        .backup
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(7200));
    let work = async {
        // Off the host too: a backup on the same disk as the database is not enough.
        let mut made = backup_db(ctx, BackupFormat::Custom, true).await?;
        if !ctx
            .target
            .backup
            .minio
            .buckets
            .clone()
            .unwrap_or_default()
            .is_empty()
        {
            made.extend(crate::snapshots::backup(ctx).await?);
        }
        made.extend(backup_env(ctx, ctx.out.verbose > 0).await?);
        crate::fault::point("before-prune");
        let pruned = prune(ctx, false).await?;
        Ok::<_, anyhow::Error>((made, pruned))
    };
    let (made, pruned) = tokio::time::timeout(deadline, work).await.map_err(|_| {
        Error::failed(format!(
            "backup all did not finish within {} (timeouts.backup)",
            humantime::format_duration(deadline)
        ))
    })??;
    if ctx.out.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            backups: Vec<Listed>,
            pruned: Vec<Listed>,
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("backup all", ctx, true),
            backups: made,
            pruned,
        })?;
    } else if ctx.out.verbose > 0 {
        for b in made.iter().chain(&pruned) {
            ctx.out.status(format!("{} {} {}", b.kind, b.name, b.place));
        }
    }
    Ok(Exit::Ok)
}

/// `dir names...`: removes database backups with their manifest and verification mark.
const PRUNE: &str = include_str!("../scripts/backup-prune.sh");

/// Applies the retention policy on the host and in `local_dir` (asks first when `ask`).
async fn prune(ctx: &Ctx, ask: bool) -> Result<Vec<Listed>> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let keep_days = t.backup.db.keep_days.unwrap_or(7);
    let (now, host) = host_db_backups(remote, &t.backup_dir).await?;
    let doomed = to_prune(&host, keep_days, now);
    let local_dir = t.local_dir.join("db");
    let local: Vec<Manifest> = std::fs::read_dir(&local_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
                .filter_map(|e| {
                    std::fs::read(e.path())
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                })
                // Names become paths here: only sound manifests are acted on.
                .filter(|m| m.problem().is_none())
                .collect()
        })
        .unwrap_or_default();
    let local_doomed = to_prune(&local, keep_days, now);
    let snapshots_doomed = crate::snapshots::prune(ctx, false)?;
    let listed: Vec<Listed> = doomed
        .iter()
        .map(|m| Listed::from_manifest(m, "host", false))
        .chain(
            local_doomed
                .iter()
                .map(|m| Listed::from_manifest(m, "local", false)),
        )
        .chain(snapshots_doomed)
        .collect();
    if listed.is_empty() {
        return Ok(listed);
    }
    if ctx.dry_run {
        for b in &listed {
            ctx.out.status(format!(
                "dry run: would remove {} ({}, {})",
                b.name, b.place, b.created
            ));
        }
        return Ok(listed);
    }
    if ask {
        ctx.confirm(&format!(
            "remove {} backups older than their keep_days on {}",
            listed.len(),
            ctx.target_label()
        ))?;
    }
    // Before anything is removed: a running `backup minio` has bodies no snapshot lists yet,
    // which the sweep of unreferenced bodies would take.
    let _local = local::lock(&t.local_dir, "backup prune", local::LOCK_WAIT).await?;
    if !doomed.is_empty() {
        let mut args = vec![t.backup_dir.clone()];
        args.extend(doomed.iter().map(|m| m.name.clone()));
        for name in &args[1..] {
            crate::catalog::validate_name(name)?;
        }
        remote.run_ok(&RemoteCommand::sh(PRUNE, args)).await?;
    }
    for m in &local_doomed {
        for path in [
            local_dir.join(&m.name),
            local_dir.join(format!("{}.manifest.json", m.name)),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }
    crate::snapshots::prune(ctx, true)?;
    Ok(listed)
}

/// `dir workdir service user name format sql`: restores NAME into a scratch database in the
/// postgres service (a full read of the archive), prints the row counts, drops the scratch.
const VERIFY: &str = include_str!("../scripts/backup-verify.sh");

#[derive(Serialize)]
struct VerifyDoc<'a> {
    #[serde(flatten)]
    envelope: Envelope<'a>,
    backup: Manifest,
    checks: Vec<crate::checks::Row>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
}

/// Checksum, a full read of the archive by restoring it into a scratch database, and the
/// row counts there compared with the manifest's.
async fn verify(ctx: &Ctx, name: &str) -> Result<Exit> {
    crate::catalog::validate_name(name)?;
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    if ctx.dry_run {
        // The checksum is read-only; the scratch restore creates (and drops) a database.
        ctx.out.status(format!(
            "dry run: would check {name}'s checksum and restore it into a scratch database on {}",
            remote.host()
        ));
        return Ok(Exit::Ok);
    }
    let started = std::time::Instant::now();
    let (manifest, sha) = crate::catalog::inspect(remote, &t.backup_dir, name).await?;
    if let Some(problem) = manifest.problem() {
        return Err(Error::refused(format!(
            "backup {} on {} cannot be verified: {problem}",
            manifest.name,
            remote.host()
        ))
        .with_help("its manifest is damaged; make a new backup with ctops backup db")
        .into());
    }
    if let Some(table) = manifest.tables.keys().find(|t| !is_qualified_table(t)) {
        return Err(Error::refused(format!(
            "backup {} on {} names a table ctops will not query: {table:?}",
            manifest.name,
            remote.host()
        ))
        .with_help("its manifest is damaged; make a new backup with ctops backup db")
        .into());
    }
    let row =
        |name: String, ok: bool, detail: String, since: std::time::Instant| crate::checks::Row {
            name,
            ok,
            latency_ms: since.elapsed().as_millis() as u64,
            detail,
        };
    let mut checks = vec![row(
        "checksum".into(),
        sha == manifest.sha256,
        format!("sha256 {sha}"),
        started,
    )];
    if checks[0].ok {
        let sql = manifest
            .tables
            .keys()
            .map(|table| {
                format!(
                    "SELECT '{}', count(*) FROM {table}",
                    table.replace('\'', "''")
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let db = &t.backup.db;
        let cmd = RemoteCommand::sh(
            &with_db_address(t, VERIFY),
            [
                t.backup_dir.clone(),
                working_dir(t),
                t.fact("backup.db.service", &db.service)?.to_string(),
                t.fact("backup.db.user", &db.user)?.to_string(),
                manifest.name.clone(),
                manifest.format.clone(),
                if sql.is_empty() {
                    "SELECT 1 WHERE false".into()
                } else {
                    sql
                },
            ],
        )
        .timeout(
            t.timeouts
                .backup
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(7200)),
        )
        .stop_on_disconnect();
        let restore_started = std::time::Instant::now();
        let out = remote.run(&cmd).await?;
        checks.push(row(
            "scratch restore".into(),
            out.status == 0,
            out.stderr_text().trim().to_string(),
            restore_started,
        ));
        if out.status == 0 {
            let counted: std::collections::BTreeMap<String, u64> = out
                .stdout_text()
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(t, n)| (t.to_string(), n.trim().parse().unwrap_or(u64::MAX)))
                .collect();
            for (table, expected) in &manifest.tables {
                let got = counted.get(table).copied();
                checks.push(row(
                    format!("rows {table}"),
                    got == Some(*expected),
                    format!(
                        "{} restored, {expected} in the manifest",
                        got.map_or("none".into(), |g| g.to_string())
                    ),
                    restore_started,
                ));
            }
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    if ctx.out.json {
        ctx.out.json_doc(&VerifyDoc {
            envelope: Envelope::new("backup verify", ctx, ok),
            backup: manifest.clone(),
            checks: checks.clone(),
            error: (!ok).then(|| serde_json::json!({"kind": "failed", "message": format!("{} failed verification", manifest.name)})),
            state: (!ok).then_some("unchanged"),
        })?;
    } else {
        ctx.out.status(format!(
            "verify {} on {}",
            manifest.name,
            ctx.target_label()
        ));
        let rows = checks
            .iter()
            .map(|c| {
                vec![
                    c.name.as_str().into(),
                    ctx.out.mark_cell(c.ok),
                    c.detail.as_str().into(),
                ]
            })
            .collect();
        ctx.out
            .print(&ctx.out.table(&["CHECK", "STATUS", "DETAIL"], rows))?;
    }
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

fn report(ctx: &Ctx, command: &str, backups: Vec<Listed>) -> Result<Exit> {
    if ctx.out.json {
        ctx.out.json_doc(&BackupDoc {
            envelope: Envelope::new(command, ctx, true),
            backups,
        })?;
    } else {
        for b in &backups {
            ctx.out.status(format!(
                "{} backup {} ({} bytes) on {}",
                b.kind, b.name, b.size, b.place
            ));
        }
    }
    Ok(Exit::Ok)
}

async fn backup_db(ctx: &Ctx, format: BackupFormat, download: bool) -> Result<Vec<Listed>> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let backup = db_backup_command(t, format, "", false)?;
    if ctx.dry_run {
        ctx.would_run(remote.host(), &backup);
        return Ok(Vec::new());
    }
    let mut bar = ctx.out.byte_bar("dump", None);
    let out = with_dump_progress(remote, t, &bar, remote.run(&backup)).await;
    bar.finish();
    let out = out?;
    if out.status == NO_SPACE {
        return Err(Error::refused(format!(
            "backup refused on {}: {}",
            remote.host(),
            out.stderr_text().trim()
        ))
        .with_help("free space in backup_dir or point it at a larger disk; nothing was written")
        .into());
    }
    if out.status != 0 {
        return Err(Error::failed(format!(
            "backup db failed on {}: {}",
            remote.host(),
            out.stderr_text().trim()
        ))
        .with_help("no partial file counts as a backup; earlier backups are untouched")
        .into());
    }
    let manifest: Manifest = serde_json::from_str(out.stdout_text().trim())
        .map_err(|e| Error::failed(format!("unreadable manifest from {}: {e}", remote.host())))?;
    if let Some(problem) = manifest.problem() {
        return Err(Error::failed(format!(
            "backup db on {} wrote a manifest ctops cannot trust: {problem}",
            remote.host()
        ))
        .with_help("ctops backup list shows it as damaged; check the backup_dir on the host")
        .into());
    }
    let mut listed = vec![Listed::from_manifest(&manifest, "host", false)];
    if download {
        let local = download_dump(ctx, remote, &manifest).await?;
        tracing::debug!("downloaded to {} (sha256 checked)", local.display());
        listed.push(Listed::from_manifest(&manifest, "local", true));
    }
    Ok(listed)
}

/// Streams a dump to `local_dir/db/` with its sha256 checked; memory stays flat. The dump
/// and its manifest are private (0600 in a 0700 folder) and each appears under its name only
/// once complete and flushed.
async fn download_dump(ctx: &Ctx, remote: &Remote, m: &Manifest) -> Result<PathBuf> {
    if let Some(problem) = m.problem() {
        return Err(Error::failed(format!("not downloading {}: {problem}", m.name)).into());
    }
    let dir = ctx.target.local_dir.join("db");
    local::private_dir(&dir)?;
    local::sweep_temporaries(&dir);
    let path = dir.join(&m.name);
    let tmp = local::temporary(&path);
    let remote_path = format!("{}/{}", ctx.target.backup_dir.trim_end_matches('/'), m.name);
    let cat = RemoteCommand::new(["cat", remote_path.as_str()])
        .read_only()
        .stop_on_disconnect();
    let file = tokio::fs::File::from_std(local::create_private(&tmp)?);
    let mut sink = HashingWriter {
        inner: file,
        hasher: Sha256::new(),
        bar: ctx
            .out
            .byte_bar(format!("download {}", m.name), Some(m.size)),
    };
    let status = remote.stream(&cat, &mut sink, None).await;
    let flushed = async {
        sink.inner.flush().await?;
        sink.inner.sync_all().await
    }
    .await;
    let digest = format!("{:x}", sink.hasher.finalize());
    sink.bar.finish();
    let failed = |why: String| {
        let _ = std::fs::remove_file(&tmp);
        Error::failed(format!(
            "download of {} from {} failed: {why}",
            m.name,
            remote.host()
        ))
        .with_help("the backup on the host is untouched; nothing was kept locally")
    };
    match status {
        Err(e) => return Err(failed(e.to_string()).into()),
        Ok(0) => {}
        Ok(code) => return Err(failed(format!("cat exited with {code}")).into()),
    }
    if let Err(e) = flushed {
        return Err(failed(format!("cannot write {}: {e}", tmp.display())).into());
    }
    if digest != m.sha256 {
        return Err(failed(format!("checksum mismatch (got {digest})")).into());
    }
    tokio::fs::rename(&tmp, &path).await.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::failed(format!("cannot rename into {}: {e}", path.display()))
    })?;
    // The manifest last: it is what makes the local copy count.
    let manifest = serde_json::to_vec(m)?;
    local::write_atomic(&dir.join(format!("{}.manifest.json", m.name)), &manifest)?;
    Ok(path)
}

/// Writes through to a file while hashing and counting for the progress bar.
struct HashingWriter {
    inner: tokio::fs::File,
    hasher: Sha256,
    bar: crate::output::Spinner,
}

impl tokio::io::AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.bar.inc(n as u64);
                std::task::Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn backup_env(ctx: &Ctx, announce: bool) -> Result<Vec<Listed>> {
    let remote = ctx.remote().await?;
    if ctx.dry_run {
        ctx.would_run(remote.host(), &env_backup_command(&ctx.target));
        return Ok(Vec::new());
    }
    let out = remote
        .run_ok(&env_backup_command(&ctx.target))
        .await?
        .stdout_text();
    let (what, path) = out.trim().split_once(' ').unwrap_or(("", ""));
    if announce {
        ctx.out.status(format!(".env backup {what}: {path}"));
    }
    Ok(vec![Listed {
        kind: "env".into(),
        name: path.rsplit('/').next().unwrap_or(path).to_string(),
        place: "host".into(),
        size: 0,
        created: String::new(),
        sha256: None,
        verified: false,
        made_by: None,
    }])
}

/// A backup file on the host without a manifest, from the list script's `name size time`.
fn unverified_file(kind: &str, columns: &str) -> Listed {
    let cols: Vec<&str> = columns.split('\t').collect();
    Listed {
        kind: kind.into(),
        name: printable(cols.first().unwrap_or(&"")),
        place: "host".into(),
        size: cols.get(1).and_then(|s| s.parse().ok()).unwrap_or(0),
        created: printable(cols.get(2).unwrap_or(&"")),
        sha256: None,
        verified: false,
        made_by: None,
    }
}

async fn list(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let out = remote
        .run_ok(&RemoteCommand::sh(LIST, [ctx.target.backup_dir.as_str()]).read_only())
        .await?
        .stdout_text();
    let mut backups = Vec::new();
    for line in out.lines() {
        if let Ok(m) = serde_json::from_str::<Manifest>(line) {
            backups.push(Listed::from_manifest(&m, "host", false));
        } else if let Some(name) = line.strip_prefix("verified\t") {
            if let Some(b) = backups.iter_mut().find(|b| b.name == name) {
                b.verified = true;
            }
        } else if let Some(rest) = line.strip_prefix("runbook\t") {
            backups.push(Listed {
                made_by: Some("runbook"),
                ..unverified_file("db", rest)
            });
        } else if let Some(rest) = line.strip_prefix("env\t") {
            backups.push(unverified_file("env", rest));
        }
    }
    if let Ok(entries) = std::fs::read_dir(ctx.target.local_dir.join("db")) {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().ends_with(".manifest.json") {
                continue;
            }
            let manifest = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
            if let Some(m) = manifest {
                backups.push(Listed::from_manifest(&m, "local", true));
            }
        }
    }
    backups.extend(crate::snapshots::list(ctx));
    backups.sort_by(|a, b| b.created.cmp(&a.created));
    if ctx.out.json {
        ctx.out.json_doc(&BackupDoc {
            envelope: Envelope::new("backup list", ctx, true),
            backups,
        })?;
        return Ok(Exit::Ok);
    }
    ctx.out.status(format!("backups of {}", ctx.target_label()));
    let rows = backups
        .iter()
        .map(|b| {
            vec![
                b.kind.as_str().into(),
                b.name.as_str().into(),
                b.place.as_str().into(),
                b.size.to_string().into(),
                b.created.as_str().into(),
                match b.sha256.as_deref() {
                    None if b.made_by.is_some() => Styled::warn("runbook (unverified)"),
                    None => "-".into(),
                    Some(s) if is_sha256(s) => s[..12].into(),
                    Some(_) => Styled::bad("damaged"),
                },
            ]
        })
        .collect();
    ctx.out.print(&ctx.out.table(
        &["KIND", "NAME", "PLACE", "SIZE", "CREATED", "SHA256"],
        rows,
    ))?;
    Ok(Exit::Ok)
}
