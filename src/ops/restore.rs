//! Runbook 5.3, `restore db`: restores that cannot make things worse.
//!
//! The runbook pipes a dump into `psql` on the live database, which carries on after
//! errors and leaves a half-restored database. ctops checks the checksum and the migration
//! revision before touching anything, restores into a *new* database in one transaction
//! that stops at the first error, then (writers stopped) swaps it in by rename, keeps the
//! old database as the safety copy, starts the writers and runs the health gate; on any
//! failure it swaps back. It runs as a detached runner, like deploy.

use anyhow::Result;
use serde::Serialize;

use crate::catalog::{inspect, invalid_manifest, validate_name, Manifest, FIND_ENV};
use crate::cli::RestoreCommand;
use crate::compose::Stack;
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::gate::{execute, failure_summary, gate_vars};
use crate::lock::HostLock;
use crate::migrations::Head;
use crate::remote::{Remote, RemoteCommand};
use crate::runner::{self, Event, Plan, Step};

/// The `restore` step: the backup into a new database.
const LOAD: &str = include_str!("../scripts/restore-load.sh");
/// The `swap` and `swap_back` steps: two renames in one transaction, nobody connected.
const SWAP: &str = include_str!("../scripts/restore-swap.sh");
/// `user database` in the database's container: its size, the KiB free where its data is, and
/// that folder.
const SPACE: &str = include_str!("../scripts/restore-space.sh");
/// `dir name`: a runbook-made dump checked, then its sha256, size, time and revision.
const INSPECT_RUNBOOK: &str = include_str!("../scripts/restore-inspect-runbook.sh");
/// The `drop_fresh` undo step: the loaded copy dropped when it was never swapped in.
const DROP_FRESH: &str = include_str!("../scripts/restore-drop-fresh.sh");
/// How long the swap waits for the sessions it terminated to go (`SWAP_WAIT`).
const SWAP_WAIT_SECONDS: u64 = 30;

/// What a restore takes from a manifest (read from the host) besides its name, checked
/// before it reaches the runner.
fn validate_for_restore(manifest: &Manifest, host: &str) -> Result<(), Error> {
    // The same test as `backup list` and `backup verify` (lowercase, as sha256sum prints).
    if !crate::catalog::is_sha256(&manifest.sha256) {
        return Err(invalid_manifest(
            &manifest.name,
            host,
            "sha256",
            &manifest.sha256,
        ));
    }
    if !matches!(manifest.format.as_str(), "custom" | "sql") {
        return Err(invalid_manifest(
            &manifest.name,
            host,
            "format",
            &manifest.format,
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    envelope: super::Envelope<'a>,
    op: String,
    outcome: String,
    backup: Manifest,
    safety_copy: Option<String>,
    steps: Vec<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
}

pub async fn run(ctx: &Ctx, command: &RestoreCommand) -> Result<Exit> {
    match command {
        RestoreCommand::Db {
            name,
            migrate,
            unverified,
        } => restore_db(ctx, name, *migrate, *unverified).await,
        RestoreCommand::Env { name } => restore_env(ctx, name).await,
        RestoreCommand::ListKept => list_kept(ctx).await,
        RestoreCommand::DropKept { name } => drop_kept(ctx, name).await,
        RestoreCommand::Minio { as_of } => crate::snapshots::restore(ctx, as_of.as_deref()).await,
    }
}

/// What can be refused from the arguments alone, before anything is asked of the host (a
/// backup name that could not be one, `--unverified` on a dump that has a manifest).
pub fn check_input(command: &RestoreCommand) -> Result<(), Error> {
    match command {
        RestoreCommand::Db {
            name, unverified, ..
        } => check_db_name(name, *unverified),
        RestoreCommand::Env { name } => validate_name(name),
        RestoreCommand::ListKept
        | RestoreCommand::DropKept { .. }
        | RestoreCommand::Minio { .. } => Ok(()),
    }
}

fn check_db_name(name: &str, unverified: bool) -> Result<(), Error> {
    match (is_runbook_dump(name), unverified) {
        (true, false) => Err(Error::usage(format!(
            "{name} was made by the runbook's own command: it has no manifest, so ctops cannot verify it"
        ))
        .with_help(format!(
            "`ctops restore db {name} --unverified` restores it after checking that the dump finished"
        ))),
        (false, true) => Err(Error::usage(format!(
            "--unverified is for dumps the runbook's own command made (db_YYYYMMDD.sql), not {name:?}"
        ))
        .with_help("see `ctops backup list`")),
        (false, false) => validate_name(name),
        (true, true) => Ok(()),
    }
}

async fn restore_db(ctx: &Ctx, name: &str, migrate: bool, unverified: bool) -> Result<Exit> {
    check_db_name(name, unverified)?;
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let db = &t.backup.db;
    let database = t.fact("backup.db.database", &db.database)?.to_string();
    let user = t.fact("backup.db.user", &db.user)?.to_string();
    let service = t.fact("backup.db.service", &db.service)?.to_string();
    if let Some(why) = t.unknown.get("backup.db.writers") {
        return Err(Error::usage(format!(
            "ctops cannot tell which services write to the database: {why}"
        ))
        .with_help("set `backup.db.writers` (the services a restore stops); nothing was changed")
        .into());
    }

    let (manifest, sha) = if unverified {
        inspect_runbook_dump(ctx, remote, name, &database).await?
    } else {
        inspect(remote, &t.backup_dir, name).await?
    };
    validate_for_restore(&manifest, remote.host())?;
    if sha != manifest.sha256 {
        return Err(Error::refused(format!(
            "{} does not match its checksum (manifest {}, file {sha}): refusing to restore; the database was not touched",
            manifest.name, manifest.sha256
        ))
        .with_help("the file is damaged; restore an earlier backup (`ctops backup list`)")
        .into());
    }
    // The revision the checked-out code expects, read from its own alembic.ini: unknown
    // refuses (a missing answer is never "no migrations").
    let code_head = match crate::discover::checked_out_head(remote, t).await? {
        Head::Known(head) => head,
        Head::Absent if manifest.revision.is_none() => None,
        Head::Absent => {
            return Err(Error::refused(format!(
                "{} is at migration revision {}, but the checked-out code has no alembic.ini to say which revision it expects; the database was not touched",
                manifest.name,
                manifest.revision.as_deref().unwrap_or_default()
            ))
            .with_help("set `deploy.migrate.versions` to the scripts' folder")
            .into())
        }
        Head::Unknown(why) => {
            return Err(Error::refused(format!(
                "the running code's migration head is unknown: {why}; the database was not touched"
            ))
            .into())
        }
    };
    if manifest.revision != code_head && !migrate {
        return Err(Error::refused(format!(
            "{} is at migration revision {}, but the running code expects {}",
            manifest.name,
            manifest.revision.as_deref().unwrap_or("none"),
            code_head.as_deref().unwrap_or("none")
        ))
        .with_help("deploy the release that matches the backup first, or pass --migrate to upgrade it after the restore")
        .into());
    }
    check_space(ctx, remote, &service, &user, &database).await?;
    let writers = t.backup.db.writers.clone().unwrap_or_default();
    let schema = match (&manifest.revision, &code_head, migrate) {
        (dump, code, _) if dump == code => format!(
            "{}: the dump's revision is the one the running code expects",
            dump.as_deref().unwrap_or("base")
        ),
        (dump, code, _) => format!(
            "{} → {}: upgrade (--migrate) after the restore",
            dump.as_deref().unwrap_or("base"),
            code.as_deref().unwrap_or("base")
        ),
    };
    ctx.out.status(
        crate::summary::Summary::new(format!("restore db {}", ctx.target_label()))
            .row(
                "from",
                format!(
                    "{}, taken {}, {} bytes, sha256 {}",
                    manifest.name,
                    manifest.created,
                    manifest.size,
                    manifest.sha256.get(..12).unwrap_or("unknown (unverified)")
                ),
            )
            .row(
                "into",
                format!("database `{database}` (service {service}), swapped in whole"),
            )
            .row("schema", schema)
            .row(
                "backup",
                "the current database is kept, renamed, until you drop it",
            )
            .row(
                "restart",
                format!(
                    "stops the writers ({}) during the swap, starts them, then the health gate",
                    writers.join(", ")
                ),
            )
            .render(),
    );
    if !ctx.dry_run {
        ctx.confirm_word(
            &format!(
                "restore {} over database `{database}` on {}",
                manifest.name,
                ctx.target_label()
            ),
            &database,
        )?;
    }
    let lock = if ctx.dry_run {
        None
    } else {
        Some(
            HostLock::acquire(
                remote,
                &t.state_dir,
                &format!("restore db {}", manifest.name),
            )
            .await?,
        )
    };
    let result = plan_and_run(
        ctx,
        remote,
        &manifest,
        migrate,
        lock.as_ref(),
        &database,
        &user,
        &service,
    )
    .await;
    if let (Err(_), Some(lock)) = (&result, &lock) {
        let _ = lock.release(remote).await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn plan_and_run(
    ctx: &Ctx,
    remote: &Remote,
    manifest: &Manifest,
    migrate: bool,
    lock: Option<&HostLock>,
    database: &str,
    user: &str,
    service: &str,
) -> Result<Exit> {
    let t = &ctx.target;
    let stack = Stack::load(remote, t).await?;
    let project = stack.project.clone().unwrap_or_else(|| "default".into());
    let compose = stack.compose(t);
    let op_id = runner::op_id(stack.host_time, "restore");
    let stamp = op_id.split('-').next().unwrap_or("now").to_lowercase();
    let fresh = format!("{database}_restore_{stamp}");
    let safety = format!("{database}_before_{stamp}");
    let failed_copy = format!("{database}_failed_{stamp}");
    let writers = t.backup.db.writers.clone().unwrap_or_default();
    let file = format!("{}/{}", t.backup_dir.trim_end_matches('/'), manifest.name);
    let mut forward = vec![
        // Marked when it starts: the load drops its own half-made copy, but a copy loaded
        // whole and never swapped in must go when a later step fails.
        Step::shell(
            "restore",
            format!("restore {} into a new database {fresh}", manifest.name),
            LOAD,
        )
        .marks("LOADING"),
        // Marked when it starts: a stop that fails half-way leaves some writers stopped.
        Step::new(
            "stop_writers",
            format!("stop the writers ({})", writers.join(", ")),
            &[compose.stop(&writers)],
        )
        .marks("STOPPED"),
        // Marked once done: both renames are one transaction, so a failed swap renamed
        // nothing, and swapping back would rename the live database away.
        Step::shell(
            "swap",
            format!("swap {fresh} in; keep the old database as {safety}"),
            format!("LIVE=$DB; AWAY=$SAFETY; INTO=$FRESH\n{SWAP}"),
        )
        .marks_when_done("SWAPPED"),
    ];
    if migrate {
        let migrate = t.deploy.migrate.clone().unwrap_or_default();
        let argv = migrate.upgrade.clone().unwrap_or_default();
        forward.push(Step::new(
            "migrate",
            "alembic upgrade head on the restored database",
            &[compose.run_rm(t.fact("deploy.migrate.service", &migrate.service)?, &argv)],
        ));
    }
    forward.push(Step::new(
        "start_writers",
        "start the writers",
        &[compose.start(&writers)],
    ));
    forward.push(Step::shell("gate", "health gate", "gate ''"));
    let back = vec![
        Step::shell(
            "swap_back",
            format!("put the old database back (the restored one kept as {failed_copy})"),
            format!("LIVE=$DB; AWAY=$FAILED_COPY; INTO=$SAFETY\n{SWAP}"),
        )
        .when("SWAPPED"),
        Step::new(
            "start_back",
            "start the writers",
            &[compose.start(&writers)],
        )
        .when("STOPPED"),
        Step::shell("gate_back", "health gate", "gate ''").when("STOPPED"),
        Step::shell(
            "drop_fresh",
            format!("drop {fresh} if it was never swapped in"),
            DROP_FRESH,
        )
        .when("LOADING"),
    ];
    let mut audit = runner::audit_fields(&t.name, &format!("restore db {}", manifest.name), &op_id);
    audit["safety_copy"] = serde_json::json!(safety);
    let plan = Plan {
        op: "restore",
        op_id: op_id.clone(),
        describe: format!(
            "restore {} into {database} (the old database kept as {safety})",
            manifest.name
        ),
        vars: [
            gate_vars(t, &project),
            vec![
                ("DB", database.to_string()),
                ("DB_USER", user.to_string()),
                ("DB_SERVICE", service.to_string()),
                ("FRESH", fresh.clone()),
                ("SAFETY", safety.clone()),
                ("FAILED_COPY", failed_copy.clone()),
                ("BACKUP_FILE", file.clone()),
                ("BACKUP_SHA", manifest.sha256.clone()),
                ("BACKUP_FORMAT", manifest.format.clone()),
                ("SWAP_WAIT", SWAP_WAIT_SECONDS.to_string()),
                // Where PostgreSQL listens, when [backup.db] says (empty: the container's own
                // environment): db_exec passes them as PGHOST/PGPORT.
                ("DB_HOST", t.backup.db.host.clone().unwrap_or_default()),
                (
                    "DB_PORT",
                    t.backup.db.port.map(|p| p.to_string()).unwrap_or_default(),
                ),
            ],
        ]
        .concat(),
        forward,
        back,
        success: "restored",
        release_fields: None,
        audit_fields: runner::json_fields(&audit),
        seed_release: None,
    };
    let Some(lock) = lock else {
        return super::print_dry_run(ctx, &plan);
    };
    ctx.out.status(format!(
        "restore {} on {}",
        manifest.name,
        ctx.target_label()
    ));
    let (outcome, steps, interrupted) = execute(ctx, remote, &plan, lock).await?;
    let (exit, message) = match outcome.as_str() {
        "restored" => (Exit::Ok, None),
        "failed" => (Exit::Failed, Some(format!("restore of {} failed before the database was touched; {}", manifest.name, failure_summary(&steps)))),
        "rolled-back" if interrupted => (Exit::Interrupted, Some("interrupted: the old database is back in place".to_string())),
        "rolled-back" if swapped(&steps) => (Exit::Failed, Some(format!("restore of {} failed; the database is as it was (the attempt is kept as {failed_copy}); {}", manifest.name, failure_summary(&steps)))),
        "rolled-back" => (Exit::Failed, Some(format!("restore of {} failed before the swap; the database is as it was; {}", manifest.name, failure_summary(&steps)))),
        _ => (Exit::Stranded, Some(format!("restore {op_id} did not end cleanly ({outcome}): see `ctops status`"))),
    };
    if ctx.out.json {
        ctx.out.json_doc(&Doc {
            envelope: super::Envelope::new("restore db", ctx, exit == Exit::Ok),
            op: op_id.clone(),
            outcome: outcome.clone(),
            backup: manifest.clone(),
            safety_copy: (exit == Exit::Ok).then(|| safety.clone()),
            steps,
            error: super::error_object(exit, message.as_ref()),
            state: (exit != Exit::Ok).then(|| outcome.clone()),
        })?;
    }
    match message {
        None => ctx.out.status(format!("restored {}; the previous database is kept as `{safety}` (drop it when you no longer need it)", manifest.name)),
        Some(m) => crate::say!("error: {m}"),
    }
    Ok(exit)
}

/// `restore env NAME`: the chosen copy of `.env` put in place by [`crate::envchange::apply`]
/// (the current file copied first, atomic replace, the services whose configuration changed
/// recreated, health gate, the previous file back on failure).
async fn restore_env(ctx: &Ctx, name: &str) -> Result<Exit> {
    validate_name(name)?;
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let found = crate::catalog::run_lookup(
        remote,
        &RemoteCommand::sh(FIND_ENV, [t.backup_dir.as_str(), name]).read_only(),
    )
    .await?
    .stdout_text();
    let source = found.trim().to_string();
    let chosen = source.rsplit('/').next().unwrap_or(name).to_string();
    if !ctx.dry_run {
        ctx.confirm(&format!(
            "replace {} on {} with {chosen}",
            t.env_file,
            ctx.target_label()
        ))?;
    }
    crate::envchange::apply(
        ctx,
        crate::envchange::Change::new(
            "restore env",
            format!("restore env {chosen}"),
            crate::envchange::Source::OnHost(source),
            Vec::new(),
        ),
    )
    .await
}

/// A dump runbook 5.2's own command makes: `db_YYYYMMDD.sql` (any plain name of that form).
fn is_runbook_dump(name: &str) -> bool {
    name.strip_prefix("db_")
        .and_then(|rest| rest.strip_suffix(".sql"))
        .is_some_and(|stem| {
            !stem.is_empty()
                && stem
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        })
}

/// A runbook dump as a manifest: what the file itself says (checksum now, size, time, the
/// revision in its `alembic_version` data), after the checks a dump without a manifest allows.
async fn inspect_runbook_dump(
    ctx: &Ctx,
    remote: &Remote,
    name: &str,
    database: &str,
) -> Result<(Manifest, String), Error> {
    let cmd =
        RemoteCommand::sh(INSPECT_RUNBOOK, [ctx.target.backup_dir.as_str(), name]).read_only();
    let out = remote.run(&cmd).await?;
    let said = crate::discover::one_line(&out.stderr_text());
    match out.status {
        0 => {}
        66 => return Err(Error::usage(said).with_help("see `ctops backup list`")),
        65 => {
            return Err(
                Error::refused(format!("{said}; the database was not touched"))
                    .with_help("restore another backup (`ctops backup list`)"),
            )
        }
        status => return Err(remote.exited(&cmd, status, &out.stderr)),
    }
    let text = out.stdout_text();
    let mut lines = text.lines().map(str::trim);
    let sha256 = lines.next().unwrap_or_default().to_string();
    let manifest = Manifest {
        kind: "db".into(),
        name: name.to_string(),
        format: "sql".into(),
        sha256: sha256.clone(),
        size: lines.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        created: lines.next().unwrap_or_default().to_string(),
        database: database.to_string(),
        revision: lines.next().filter(|r| !r.is_empty()).map(str::to_string),
        label: "runbook".into(),
        tables: Default::default(),
    };
    ctx.out.warn(format!(
        "{name} was made by the runbook's own command: no manifest, no checksum from when it was made and no row counts to compare; it ends with pg_dump's completion line, and its data says migration revision {}",
        manifest.revision.as_deref().unwrap_or("none")
    ));
    Ok((manifest, sha256))
}

/// Whether the journal shows the swap done (the failed attempt is then kept under a name).
fn swapped(steps: &[Event]) -> bool {
    steps.iter().any(|e| e.step == "swap" && e.kind == "ok")
}

/// Refuses (exit 4, nothing changed) unless the filesystem PostgreSQL keeps its data on can
/// hold a second copy of the database, plus a tenth of it and `restore_min_free_mb`.
async fn check_space(
    ctx: &Ctx,
    remote: &Remote,
    service: &str,
    user: &str,
    database: &str,
) -> Result<(), Error> {
    let t = &ctx.target;
    let argv: Vec<String> = ["sh", "-c", SPACE, "sh", user, database]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = remote
        .run(&crate::compose::exec_in_service(t, service, &argv).read_only())
        .await?;
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    // `df -Pk`'s last line: filesystem, blocks, used, available, capacity, mount point.
    let avail_kib = lines
        .last()
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|s| s.parse::<u64>().ok());
    let size = lines.first().and_then(|s| s.trim().parse::<u64>().ok());
    let (Some(size), Some(avail_kib), true) = (size, avail_kib, out.status == 0) else {
        return Err(Error::refused(format!(
            "cannot tell whether {} has room for a second copy of `{database}`: {}; nothing was changed",
            remote.host(),
            crate::discover::one_line(&out.stderr_text())
        ))
        .with_help("check `backup.db.service`, `backup.db.user` and that `df` works in the database's container"));
    };
    let data_dir = lines.get(1).copied().unwrap_or_default();
    let min_free = t.backup.db.restore_min_free_mb.unwrap_or(256) * 1024 * 1024;
    let need = space_needed(size, min_free);
    let avail = avail_kib.saturating_mul(1024);
    if avail < need {
        return Err(Error::refused(format!(
            "not enough space on {} for a restore: `{database}` is {}, a second copy needs {} free in {data_dir}, which has {}; nothing was changed",
            remote.host(),
            mib(size),
            mib(need),
            mib(avail)
        ))
        .with_help("free space there (`ctops restore list-kept` shows copies earlier restores kept; `ctops restore drop-kept NAME`), or lower `backup.db.restore_min_free_mb`"));
    }
    Ok(())
}

/// A second copy of a `size`-byte database, a tenth more for what it grows while loading
/// (indexes built, WAL), and what must stay free after it.
fn space_needed(size: u64, min_free: u64) -> u64 {
    size.saturating_add(size / 10).saturating_add(min_free)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1_048_576.0)
}

/// Which copy a restore kept a database as (`<db>_before_<stamp>`, `_failed_`, `_restore_`),
/// or `None` for every other name: only those may be dropped by `drop-kept`.
fn kept_kind(database: &str, name: &str) -> Option<&'static str> {
    let rest = name.strip_prefix(database)?.strip_prefix('_')?;
    ["before", "failed", "restore"].into_iter().find(|kind| {
        rest.strip_prefix(kind)
            .and_then(|r| r.strip_prefix('_'))
            .is_some_and(|stamp| {
                !stamp.is_empty()
                    && stamp
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
            })
    })
}

#[derive(Debug, Serialize)]
struct Kept {
    name: String,
    kind: &'static str,
    size: u64,
}

/// The copies earlier restores kept, with their sizes (one query in the database's container).
async fn kept_copies(ctx: &Ctx, remote: &Remote) -> Result<(String, Vec<Kept>), Error> {
    let t = &ctx.target;
    let db = &t.backup.db;
    let database = t.fact("backup.db.database", &db.database)?.to_string();
    let user = t.fact("backup.db.user", &db.user)?;
    let service = t.fact("backup.db.service", &db.service)?;
    let argv: Vec<String> = [
        "psql",
        "-X",
        "-tA",
        "-F",
        "\t",
        "-U",
        user,
        "-d",
        "postgres",
        "-c",
        "SELECT datname, pg_database_size(datname) FROM pg_database WHERE NOT datistemplate ORDER BY 1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let text = remote
        .run_ok(&crate::compose::exec_in_service(t, service, &argv).read_only())
        .await?
        .stdout_text();
    let kept = text
        .lines()
        .filter_map(|line| {
            let (name, size) = line.split_once('\t')?;
            Some(Kept {
                kind: kept_kind(&database, name)?,
                name: name.to_string(),
                size: size.trim().parse().unwrap_or(0),
            })
        })
        .collect();
    Ok((database, kept))
}

#[derive(Serialize)]
struct KeptDoc<'a> {
    #[serde(flatten)]
    envelope: super::Envelope<'a>,
    database: String,
    kept: Vec<Kept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<String>,
}

/// `restore list-kept`: the `_before_`, `_failed_` and `_restore_` copies of the database.
async fn list_kept(ctx: &Ctx) -> Result<Exit> {
    let remote = ctx.remote().await?;
    let (database, kept) = kept_copies(ctx, remote).await?;
    if ctx.out.json {
        ctx.out.json_doc(&KeptDoc {
            envelope: super::Envelope::new("restore list-kept", ctx, true),
            database,
            kept,
            dropped: None,
        })?;
        return Ok(Exit::Ok);
    }
    if kept.is_empty() {
        ctx.out.status(format!(
            "no copies of `{database}` kept by earlier restores"
        ));
        return Ok(Exit::Ok);
    }
    let rows = kept
        .iter()
        .map(|k| vec![k.name.clone(), k.kind.to_string(), mib(k.size)])
        .collect();
    ctx.out
        .print(&ctx.out.table(&["NAME", "KIND", "SIZE"], rows))?;
    Ok(Exit::Ok)
}

/// `restore drop-kept NAME`: drops one kept copy, after its name is typed, under the host lock.
async fn drop_kept(ctx: &Ctx, name: &str) -> Result<Exit> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let (database, kept) = kept_copies(ctx, remote).await?;
    if kept_kind(&database, name).is_none() {
        return Err(Error::usage(format!(
            "{name:?} is not a copy a restore kept of `{database}`: only `{database}_before_…`, `_failed_…` and `_restore_…` can be dropped"
        ))
        .with_help("see `ctops restore list-kept`")
        .into());
    }
    let Some(copy) = kept.iter().find(|k| k.name == name) else {
        return Err(
            Error::usage(format!("no database {name} on {}", remote.host()))
                .with_help("see `ctops restore list-kept`")
                .into(),
        );
    };
    if ctx.dry_run {
        ctx.out.status(format!(
            "dry run: would drop database {name} ({}) on {}",
            mib(copy.size),
            ctx.target_label()
        ));
        return Ok(Exit::Ok);
    }
    ctx.confirm_word(
        &format!(
            "drop database {name} ({}) on {}",
            mib(copy.size),
            ctx.target_label()
        ),
        name,
    )?;
    let lock =
        HostLock::acquire(remote, &t.state_dir, &format!("restore drop-kept {name}")).await?;
    let db = &t.backup.db;
    let argv: Vec<String> = ["dropdb", "-U", t.fact("backup.db.user", &db.user)?, name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let service = t.fact("backup.db.service", &db.service)?;
    let dropped = super::run_step(
        remote,
        &crate::compose::exec_in_service(t, service, &argv),
        "dropdb",
    )
    .await;
    let _ = lock.release(remote).await;
    dropped?;
    if ctx.out.json {
        let (database, kept) = kept_copies(ctx, remote).await?;
        ctx.out.json_doc(&KeptDoc {
            envelope: super::Envelope::new("restore drop-kept", ctx, true),
            database,
            kept,
            dropped: Some(name.to_string()),
        })?;
    } else {
        ctx.out
            .status(format!("dropped {name} ({})", mib(copy.size)));
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found building the corpus (`manifest/sha256-uppercase.json`): restore took a checksum that
    /// `backup list` and `backup verify` refuse, then blamed the file for the mismatch.
    #[test]
    fn restore_takes_only_a_manifest_that_backup_list_counts() {
        let json = |sha: &str| {
            format!(
                r#"{{"kind":"db","name":"db-1.dump","format":"custom","sha256":"{sha}","size":1,"created":"x","database":"d","revision":null,"tables":{{}}}}"#
            )
        };
        let upper: Manifest = serde_json::from_str(&json(&"AB".repeat(32))).unwrap();
        assert!(upper.problem().is_some());
        let err = validate_for_restore(&upper, "h").unwrap_err();
        assert!(err.message.contains("sha256"), "{}", err.message);
        let lower: Manifest = serde_json::from_str(&json(&"ab".repeat(32))).unwrap();
        validate_for_restore(&lower, "h").unwrap();
    }

    #[test]
    fn only_copies_a_restore_kept_can_be_dropped() {
        assert_eq!(
            kept_kind("calmdb", "calmdb_before_20261130t140512z"),
            Some("before")
        );
        assert_eq!(
            kept_kind("calmdb", "calmdb_failed_20261130t140512z"),
            Some("failed")
        );
        assert_eq!(
            kept_kind("calmdb", "calmdb_restore_20261130t140512z"),
            Some("restore")
        );
        for name in [
            "calmdb",
            "calmdb_before_",
            "calmdb_before_X",
            "calmdb_before_1; DROP",
            "other_before_1",
            "calmdb2_before_1",
            "calmdb_latest_1",
            "postgres",
        ] {
            assert_eq!(kept_kind("calmdb", name), None, "{name}");
        }
    }

    #[test]
    fn runbook_dumps_are_told_apart_by_name() {
        assert!(is_runbook_dump("db_20260113.sql"));
        assert!(!is_runbook_dump("db-20260113T000000Z.dump"));
        assert!(!is_runbook_dump("db_.sql"));
        assert!(!is_runbook_dump("db_../../etc/passwd.sql"));
        assert!(!is_runbook_dump("db_x\n.sql"));
        assert!(!is_runbook_dump("db_2026.dump"));
    }

    #[test]
    fn a_restore_needs_room_for_a_second_copy_and_a_margin() {
        let mib = 1024 * 1024;
        assert_eq!(space_needed(1000 * mib, 256 * mib), 1356 * mib);
        assert_eq!(space_needed(u64::MAX, 1), u64::MAX);
    }
}
