//! The facts about a target's host that the changing commands rely on, checked read-only:
//! what `ctops doctor` shows as one table, and what `deploy`, `restore`, `rotate` and `env`
//! check before their first change.
//!
//! Everything the host says comes from one script (`scripts/doctor-facts.sh`), run after the
//! stack's facts are discovered (`compose config`, which ctops reads once per invocation, and
//! the running containers): the script needs the database service and user they tell. Each
//! fact is a [`Fact`] row: ok, a warning (the command will run, but something will not work
//! as expected), a contradiction between the config and the host (the command would fail
//! or refuse), or skipped because a fact it needs is already red.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::compose::{working_dir, Stack};
use crate::config::Target;
use crate::context::Ctx;
use crate::discover::{self, tab_fields};
use crate::envfile::EnvFile;
use crate::error::{Error, Exit};
use crate::migrations::{Graph, Head};
use crate::remote::{Remote, RemoteCommand};

const MIGRATIONS_SH: &str = include_str!("scripts/migrations.sh");
const DIRS_SH: &str = include_str!("scripts/doctor-dirs.sh");
const DOCTOR_SH: &str = include_str!("scripts/doctor-facts.sh");

/// A host clock further than this from the operator's is a warning: lock ages, backup ages
/// and `--as-of` dates are the host's.
pub const MAX_SKEW_SECS: i64 = 10;

/// The rows, in the order `doctor` shows them.
pub const CHECKOUT: &str = "checkout";
pub const COMPOSE_FILE: &str = "compose file";
pub const COMPOSE_PROJECT: &str = "compose project";
pub const SERVICES: &str = "services";
pub const MIGRATIONS_DEPLOYED: &str = "migrations (deployed)";
pub const MIGRATIONS_BRANCH: &str = "migrations (branch)";
pub const DATABASE: &str = "database";
pub const PG_HBA: &str = "pg_hba trust";
pub const STATE_DIR: &str = "state_dir";
pub const BACKUP_DIR: &str = "backup_dir";
pub const FREE_SPACE: &str = "free space";
pub const SUDO: &str = "sudo";
pub const HEALTH_URL: &str = "health_url";
pub const CLOCK: &str = "clock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// Not checked because a fact it needs is red (that row says why).
    Skipped,
    /// The command runs, but something will not work as the config expects.
    Warn,
    /// The config contradicts the host: a command that needs this fact fails or refuses.
    Fail,
}

/// One row of the doctor's table.
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    pub name: &'static str,
    pub level: Level,
    pub ok: bool,
    pub detail: String,
    /// What to do about a red or yellow row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Fact {
    fn new(name: &'static str, level: Level, detail: impl Into<String>) -> Self {
        Fact {
            name,
            level,
            ok: level == Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Level::Ok, detail)
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Level::Warn, detail).with_fix(fix)
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Level::Fail, detail).with_fix(fix)
    }
    fn skipped(name: &'static str, needs: &str) -> Self {
        Self::new(
            name,
            Level::Skipped,
            format!("not checked: needs `{needs}`"),
        )
    }
    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The exit code a set of rows means: 2 when one contradicts the config, 5 with a warning.
pub fn verdict(facts: &[Fact]) -> Exit {
    match facts.iter().map(|f| f.level).max() {
        Some(Level::Fail) => Exit::Usage,
        Some(Level::Warn) => Exit::Degraded,
        _ => Exit::Ok,
    }
}

/// Every fact, over the one connection: discovery (cached by the context where a command
/// already did it), then the one host script, with `health_url` fetched from here meanwhile.
pub async fn gather(ctx: &Ctx) -> Result<Vec<Fact>, Error> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let env_path = format!("{}/{}", t.dir.trim_end_matches('/'), t.env_file);
    let read_env = async {
        match rotated_role(t) {
            Some(_) => Some(
                remote
                    .run_ok(&RemoteCommand::new(["cat", env_path.as_str()]).read_only())
                    .await,
            ),
            None => None,
        }
    };
    let (config, stack, env) = tokio::join!(ctx.compose_config(), Stack::load(remote, t), read_env);
    let mut target = t.clone();
    let empty = Stack {
        project: None,
        containers: Vec::new(),
        host_time: 0,
    };
    let known_stack = stack.as_ref().unwrap_or(&empty);
    let services = match &config {
        Ok(json) => Some(discover::parse_services(json)?),
        Err(_) => None,
    };
    let missing = match &services {
        Some(services) => {
            discover::fill_stack_facts(remote, &mut target, services, known_stack).await?;
            discover::missing_services(&target, services)
        }
        None => {
            let why = config.as_ref().err().map(|e| e.message.clone());
            let failed = Err(Error::failed(why.unwrap_or_default()));
            discover::stack_facts(remote, &mut target, failed, known_stack).await?;
            Vec::new()
        }
    };
    let env = env.map(|read| read.map(|out| EnvFile::parse(&out.stdout_text())));
    let hba = pg_hba_probe(&target, env.as_ref());
    let (host, local_health) = tokio::join!(
        run_script(
            remote,
            &target,
            hba.as_ref().ok().map(|p| p.script.as_str())
        ),
        fetch_health(&t.health_url, t.timeouts.check()),
    );
    let host = host?;
    let said = Said {
        t: &target,
        config: config.as_ref().map(|_| ()).map_err(|e| e.message.clone()),
        stack: stack.map_err(|e| (e.message, e.help)),
        services,
        missing,
        hba,
        host,
        local_health,
    };
    Ok(said.rows())
}

/// The first role whose password `rotate` changes (`[secrets] X = { postgres_role = ... }`).
fn rotated_role(t: &Target) -> Option<&str> {
    t.secrets.values().find_map(|s| s.postgres_role.as_deref())
}

/// What the host script printed, grouped by key, and when (the host's clock against ours).
struct HostSaid {
    fields: BTreeMap<String, Vec<String>>,
    skew: i64,
}

impl HostSaid {
    fn one(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
    fn all(&self, key: &str) -> &[String] {
        self.fields.get(key).map(Vec::as_slice).unwrap_or_default()
    }
}

async fn run_script(remote: &Remote, t: &Target, hba: Option<&str>) -> Result<HostSaid, Error> {
    let db = &t.backup.db;
    let versions = t.deploy.migrate.as_ref().and_then(|m| m.versions.clone());
    let mut args: Vec<String> = vec![
        t.dir.clone(),
        t.compose_file.clone(),
        t.branch.clone(),
        versions.unwrap_or_default(),
        t.state_dir.clone(),
        t.backup_dir.clone(),
        working_dir(t),
    ];
    // The database section runs only when every fact it needs is known.
    let db_args = match (&db.service, &db.user, &db.database) {
        (Some(s), Some(u), Some(d)) => [s.clone(), u.clone(), d.clone()],
        _ => Default::default(),
    };
    args.extend(db_args);
    args.push(db.host.clone().unwrap_or_default());
    args.push(db.port.map(|p| p.to_string()).unwrap_or_default());
    args.push(hba.unwrap_or_default().to_string());
    args.push(t.health_url.clone());
    args.push(t.timeouts.check().as_secs().max(1).to_string());
    args.extend(t.sudo.iter().cloned());
    let cmd = RemoteCommand::sh(&format!("{MIGRATIONS_SH}\n{DIRS_SH}\n{DOCTOR_SH}"), args)
        .read_only()
        .timeout(t.timeouts.command());
    let sent = local_now();
    let out = remote.run(&cmd).await?;
    if out.status != 0 {
        let stderr = out.stderr_text();
        return Err(Error::failed(format!(
            "reading the host's facts on {} failed (exit {}): {}",
            remote.host(),
            out.status,
            one_line(&stderr)
        )));
    }
    let fields = tab_fields(&out.stdout_text());
    let host_now: i64 = fields
        .get("now")
        .and_then(|v| v.first())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(sent);
    Ok(HostSaid {
        fields,
        skew: host_now - sent,
    })
}

/// This machine's clock (UTC seconds); `CTOPS_FAULT=clock-skew` sets it an hour back, for
/// the test of the clock row.
fn local_now() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if crate::fault::requested() == "clock-skew" {
        now - 3600
    } else {
        now
    }
}

/// GET `health_url` from this machine: the HTTP status, or why there is none.
async fn fetch_health(url: &str, timeout: Duration) -> Result<u16, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("invalid health_url: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) if e.is_timeout() => Err(format!(
            "no answer within {} (timeouts.check)",
            humantime::format_duration(timeout)
        )),
        Err(e) if e.is_connect() => Err("connection refused or unreachable".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// How rotate proves a password: over the application's own address to the database (from
/// its URL in `.env`), here with a password nobody has.
struct HbaProbe {
    role: String,
    address: String,
    /// psql input: `\connect` with the wrong password, then a query.
    script: String,
}

/// The probe for the first rotated role, or why there is none (`Ok(None)`: no role).
fn pg_hba_probe(
    t: &Target,
    env: Option<&Result<EnvFile, Error>>,
) -> Result<HbaProbe, Option<String>> {
    let Some(role) = rotated_role(t) else {
        return Err(None);
    };
    let env = match env {
        Some(Ok(env)) => env,
        Some(Err(e)) => return Err(Some(format!("cannot read {}: {}", t.env_file, e.message))),
        None => return Err(None),
    };
    let entries = env.entries();
    let (host, port) = discover::app_database_address(&entries, role).ok_or_else(|| {
        Some(format!(
            "no database URL in {} connects as role {role}: rotate would change the password without being able to prove it",
            t.env_file
        ))
    })?;
    let database = discover::app_database_name(&entries, role, t.backup.db.database.as_deref())
        .ok_or_else(|| Some(format!("no database to log in to as {role}")))?;
    let value = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut conninfo = format!(
        "host={} user={} dbname={} password={}",
        value(&host),
        value(role),
        value(&database),
        value(&format!("ctops-wrong-{}", crate::lock::new_token()))
    );
    let mut address = format!("host {host}");
    if let Some(port) = port {
        conninfo.push_str(&format!(" port={port}"));
        address.push_str(&format!(" port {port}"));
    }
    Ok(HbaProbe {
        role: role.to_string(),
        address,
        script: format!(
            "\\connect '{}'\nSELECT 'logged-in';",
            conninfo.replace('\\', "\\\\").replace('\'', "\\'")
        ),
    })
}

/// Everything read, turned into rows.
struct Said<'a> {
    t: &'a Target,
    config: Result<(), String>,
    stack: Result<Stack, (String, Option<String>)>,
    services: Option<BTreeMap<String, discover::ServiceDef>>,
    missing: Vec<String>,
    hba: Result<HbaProbe, Option<String>>,
    host: HostSaid,
    local_health: Result<u16, String>,
}

impl Said<'_> {
    fn rows(&self) -> Vec<Fact> {
        let checkout = self.checkout();
        let checkout_ok = checkout.level != Level::Fail;
        let compose_file = if checkout_ok {
            self.compose_file()
        } else {
            Fact::skipped(COMPOSE_FILE, CHECKOUT)
        };
        let compose_ok = compose_file.level == Level::Ok;
        let (project, services) = if compose_ok {
            (self.project(), self.services())
        } else {
            (
                Fact::skipped(COMPOSE_PROJECT, COMPOSE_FILE),
                Fact::skipped(SERVICES, COMPOSE_FILE),
            )
        };
        let project_ok = project.level != Level::Fail;
        let (deployed, branch) = if checkout_ok {
            (self.deployed(compose_ok && project_ok), self.branch())
        } else {
            (
                Fact::skipped(MIGRATIONS_DEPLOYED, CHECKOUT),
                Fact::skipped(MIGRATIONS_BRANCH, CHECKOUT),
            )
        };
        // The database's container is found by the label of the checkout's compose folder.
        let database = if checkout_ok {
            self.database(compose_ok && project_ok)
        } else {
            Fact::skipped(DATABASE, CHECKOUT)
        };
        let database_ok = database.level == Level::Ok;
        let hba = if checkout_ok {
            self.pg_hba(database_ok)
        } else {
            Fact::skipped(PG_HBA, CHECKOUT)
        };
        let free = self.free_space();
        vec![
            checkout,
            compose_file,
            project,
            services,
            deployed,
            branch,
            database,
            hba,
            self.dir_row(STATE_DIR, "state", true),
            self.dir_row(BACKUP_DIR, "backups", false),
            free,
            self.sudo(),
            self.health(),
            self.clock(),
        ]
    }

    fn checkout(&self) -> Fact {
        let t = self.t;
        if let Some(why) = self.host.one("checkout_error") {
            return Fact::fail(
                CHECKOUT,
                format!("{}: {why}", t.dir),
                "set `dir` to the application's git checkout on the host",
            );
        }
        let commit = self.host.one("checkout").unwrap_or_default();
        let mut detail = format!("{} at {}", t.dir, short(commit));
        if let Some(tag) = self.host.one("checkout_tag").filter(|s| !s.is_empty()) {
            detail.push_str(&format!(" ({tag})"));
        } else if let Some(v) = self.host.one("checkout_version").filter(|s| !s.is_empty()) {
            detail.push_str(&format!(" (VERSION {v})"));
        }
        match self.host.one("checkout_branch").filter(|b| !b.is_empty()) {
            Some(b) => detail.push_str(&format!(", branch {b}")),
            None => detail.push_str(", detached"),
        }
        let dirty = self.host.all("dirty");
        if dirty.is_empty() {
            return Fact::ok(CHECKOUT, detail);
        }
        Fact::warn(
            CHECKOUT,
            format!(
                "{detail}; local changes: {}",
                dirty
                    .iter()
                    .map(|l| l.get(3..).unwrap_or(l))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "deploy refuses a checkout with local changes: commit or discard them on the host",
        )
    }

    fn compose_file(&self) -> Fact {
        let t = self.t;
        if self.host.one("compose_file").is_none() {
            return Fact::fail(
                COMPOSE_FILE,
                format!("no {} in {}", t.compose_file, t.dir),
                "set `compose_file` (relative to `dir`)",
            );
        }
        let program = t.compose.join(" ");
        match (&self.config, &self.services) {
            (Ok(()), Some(services)) => Fact::ok(
                COMPOSE_FILE,
                format!(
                    "{}: `{program} config` reads {} services",
                    t.compose_file,
                    services.len()
                ),
            ),
            (Err(why), _) => Fact::fail(
                COMPOSE_FILE,
                format!("`{program} config` fails: {}", one_line(why)),
                "check `compose` (compose v2 is [\"docker\", \"compose\"]) and the compose file",
            ),
            (Ok(()), None) => Fact::fail(
                COMPOSE_FILE,
                "`compose config` said nothing",
                "check the compose file",
            ),
        }
    }

    fn project(&self) -> Fact {
        let t = self.t;
        match &self.stack {
            Err((why, help)) => Fact::fail(
                COMPOSE_PROJECT,
                why.clone(),
                help.clone().unwrap_or_else(|| "see `ctops status`".into()),
            ),
            Ok(stack) => match &stack.project {
                Some(project) => {
                    let running = stack.containers.iter().filter(|c| c.running()).count();
                    Fact::ok(
                        COMPOSE_PROJECT,
                        format!(
                            "`{project}`{}: {running} of {} containers running",
                            if t.compose_project.is_some() {
                                " (as configured)"
                            } else {
                                ""
                            },
                            stack.containers.len()
                        ),
                    )
                }
                None => Fact::warn(
                    COMPOSE_PROJECT,
                    format!("no container of {} exists yet", t.compose_file),
                    "the first `ctops deploy` (or `ctops up`) starts the stack",
                ),
            },
        }
    }

    fn services(&self) -> Fact {
        let names: Vec<&String> = self.services.iter().flat_map(|s| s.keys()).collect();
        let all = names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if self.missing.is_empty() {
            Fact::ok(
                SERVICES,
                format!("every service the config names exists ({all})"),
            )
        } else {
            Fact::fail(
                SERVICES,
                format!("the project has no {}", self.missing.join(", ")),
                format!("the project's services are: {all}; fix the config"),
            )
        }
    }

    /// The migration head at `tag` (`cur`, `tgt`) of the script's output.
    fn head(&self, tag: &str, commit: &str) -> Head {
        let versions = self
            .t
            .deploy
            .migrate
            .as_ref()
            .and_then(|m| m.versions.clone());
        let dirs = match discover::locate(versions.as_deref(), &self.host.fields, tag) {
            Ok(dirs) => dirs,
            Err(head) => return head,
        };
        let tree: BTreeSet<&str> = self
            .host
            .all(&format!("{tag}_tree"))
            .iter()
            .map(String::as_str)
            .collect();
        let existing: Vec<&String> = dirs.iter().filter(|d| tree.contains(d.as_str())).collect();
        if existing.is_empty() {
            return Head::Unknown(format!(
                "the migration scripts' folder {} does not exist at {}; set `deploy.migrate.versions`",
                dirs.join(", "),
                short(commit)
            ));
        }
        // `REF:path:line`, kept when the path is inside one of the folders.
        let lines: Vec<&str> = self
            .host
            .all(&format!("{tag}_mig"))
            .iter()
            .map(String::as_str)
            .filter(|l| {
                let path = l.split_once(':').map_or("", |(_, rest)| rest);
                existing.iter().any(|d| path.starts_with(&format!("{d}/")))
            })
            .collect();
        match Graph::parse_grep(&lines.join("\n")).head() {
            Ok(head) => Head::Known(head),
            Err(e) => Head::Unknown(format!(
                "{e} at {}: merge the heads (alembic merge) first",
                short(commit)
            )),
        }
    }

    fn head_row(&self, name: &'static str, tag: &str, commit: &str, what: &str) -> Fact {
        let fix = "set `deploy.migrate.versions` to the scripts' folder";
        match self.head(tag, commit) {
            Head::Known(Some(head)) => Fact::ok(name, format!("head {head} at {what}")),
            Head::Known(None) => Fact::ok(name, format!("no revision yet (base) at {what}")),
            Head::Absent => match self.host.one("db_revision") {
                Some(rev) if !rev.trim().is_empty() => Fact::fail(
                    name,
                    format!(
                        "the database is at revision {}, but {what} has no alembic.ini to say where its schema belongs",
                        rev.trim()
                    ),
                    fix,
                ),
                _ => Fact::ok(name, format!("no alembic.ini at {what}: no migrations")),
            },
            Head::Unknown(why) => Fact::fail(name, why, fix),
        }
    }

    fn deployed(&self, stack_known: bool) -> Fact {
        let commit = self.host.one("checkout").unwrap_or_default();
        let row = self.head_row(
            MIGRATIONS_DEPLOYED,
            "cur",
            commit,
            &format!("the deployed commit {}", short(commit)),
        );
        let service = self
            .t
            .deploy
            .migrate
            .as_ref()
            .and_then(|m| m.service.clone());
        match (row.level, service) {
            (Level::Ok, Some(service))
                if row.detail.starts_with("head") || row.detail.starts_with("no revision") =>
            {
                let mut row = row;
                row.detail
                    .push_str(&format!("; migrations run in service `{service}`"));
                row
            }
            (Level::Ok, None) if !row.detail.starts_with("no alembic.ini") && stack_known => {
                let why = self
                    .t
                    .unknown
                    .get("deploy.migrate.service")
                    .cloned()
                    .unwrap_or_default();
                Fact::fail(
                    MIGRATIONS_DEPLOYED,
                    format!(
                        "{}; but which service runs them is unknown: {why}",
                        row.detail
                    ),
                    "set `deploy.migrate.service`",
                )
            }
            _ => row,
        }
    }

    fn branch(&self) -> Fact {
        let t = self.t;
        let Some(tip) = self.host.one("branch_head") else {
            return match self.host.one("origin_error") {
                Some(why) => Fact::fail(
                    MIGRATIONS_BRANCH,
                    format!("origin/{} is not in the checkout, and origin does not answer: {}", t.branch, one_line(why)),
                    "check that the host reaches the git origin without a prompt (`ctops setup` says how)",
                ),
                None => Fact::fail(
                    MIGRATIONS_BRANCH,
                    format!("origin has no branch `{}`", t.branch),
                    "set `branch` to the branch deploy takes",
                ),
            };
        };
        let mut what = format!("origin/{} {}", t.branch, short(tip));
        match self.host.one("origin_head") {
            Some("") => {
                return Fact::fail(
                    MIGRATIONS_BRANCH,
                    format!(
                        "origin has no branch `{}` (the checkout still knows {what})",
                        t.branch
                    ),
                    "set `branch` to the branch deploy takes",
                )
            }
            Some(head) if head != tip => what.push_str(&format!(
                " (the last fetch; origin is at {} now)",
                short(head)
            )),
            _ => {}
        }
        let row = self.head_row(MIGRATIONS_BRANCH, "tgt", tip, &what);
        match (row.level, self.host.one("origin_error")) {
            (Level::Ok, Some(why)) => Fact::warn(
                MIGRATIONS_BRANCH,
                format!("{}; origin does not answer: {}", row.detail, one_line(why)),
                "deploy fetches from origin: check that the host reaches it without a prompt",
            ),
            _ => row,
        }
    }

    fn database(&self, stack_known: bool) -> Fact {
        let t = self.t;
        let db = &t.backup.db;
        let keys = [
            "backup.db.service",
            "backup.db.user",
            "backup.db.database",
            "backup.db.writers",
        ];
        let unset = |k: &str| match k {
            "backup.db.service" => db.service.is_none(),
            "backup.db.user" => db.user.is_none(),
            "backup.db.database" => db.database.is_none(),
            _ => db.writers.is_none(),
        };
        let unknown: Vec<String> = keys
            .iter()
            .filter(|k| unset(k))
            .filter_map(|k| t.unknown.get(k).map(|why| format!("`{k}`: {why}")))
            .collect();
        // Unknown because compose config or the stack could not be read: that row is red.
        let blind = self.config.is_err() || !stack_known;
        let essential = unknown
            .iter()
            .any(|u| !u.starts_with("`backup.db.writers`"));
        match (unknown.is_empty(), blind, essential) {
            (true, _, _) | (false, true, false) => {}
            (false, true, true) => return Fact::skipped(DATABASE, COMPOSE_FILE),
            (false, false, _) => {
                return Fact::fail(
                    DATABASE,
                    format!("ctops cannot tell {}", unknown.join("; ")),
                    "set these keys under [backup.db]",
                )
            }
        }
        let (service, user, database) = (
            db.service.clone().unwrap_or_default(),
            db.user.clone().unwrap_or_default(),
            db.database.clone().unwrap_or_default(),
        );
        if let Some(why) = self.host.one("db_error") {
            return Fact::fail(
                DATABASE,
                format!("psql as `{user}` on `{database}` in service `{service}` fails: {}", one_line(why)),
                "check `backup.db.service`, `.user`, `.database` and where PostgreSQL listens (`backup.db.host`, `.port`)",
            );
        }
        let size = self
            .host
            .one("db_size")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(bytes)
            .unwrap_or_default();
        let revision = match self.host.one("db_revision").map(str::trim) {
            Some("") | None => "no alembic revision".to_string(),
            Some(rev) => format!("revision {rev}"),
        };
        let writers = db.writers.clone().unwrap_or_default().join(", ");
        Fact::ok(
            DATABASE,
            format!("`{database}` answers `{user}` in service `{service}` ({size}, {revision}); writers: {writers}"),
        )
    }

    fn pg_hba(&self, database_ok: bool) -> Fact {
        let probe = match &self.hba {
            Err(None) => {
                return Fact::ok(
                    PG_HBA,
                    "no secret has a `postgres_role`: rotate changes no role's password",
                )
            }
            Err(Some(why)) => {
                return Fact::warn(
                    PG_HBA,
                    why.clone(),
                    "rotate reports such a change as applied, not proven (exit 5)",
                )
            }
            Ok(probe) => probe,
        };
        if !database_ok {
            return Fact::skipped(PG_HBA, DATABASE);
        }
        let said = self.host.one("hba").unwrap_or_default();
        let (role, address) = (&probe.role, &probe.address);
        if said.contains("logged-in") {
            Fact::warn(
                PG_HBA,
                format!("PostgreSQL lets role {role} in over the application's address ({address}) with any password: rotate cannot prove a new password"),
                "have pg_hba.conf ask for a password (scram-sha-256) on that address, or connect the application over one that does",
            )
        } else if said.contains("password authentication failed") {
            Fact::ok(
                PG_HBA,
                format!("role {role} over the application's address ({address}) is refused a wrong password: rotate can prove the new one"),
            )
        } else {
            Fact::warn(
                PG_HBA,
                format!("role {role} over the application's address ({address}): {}", one_line(said)),
                "rotate checks the new password over this address and would put the old one back: check the database URL in env_file",
            )
        }
    }

    fn dir_row(&self, name: &'static str, key: &str, lock_files: bool) -> Fact {
        dir_fact(self.t, &self.host, name, key, lock_files)
    }

    fn free_space(&self) -> Fact {
        let Some(avail) = self
            .host
            .one("avail")
            .and_then(|a| a.trim().parse::<u64>().ok())
        else {
            return Fact::skipped(FREE_SPACE, BACKUP_DIR);
        };
        let last = self.host.one("last_dump").and_then(|l| {
            let (name, size) = l.split_once('\t')?;
            Some((
                format!("the last dump, {name}"),
                size.trim().parse::<u64>().ok()?,
            ))
        });
        let db = self
            .host
            .one("db_size")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|size| ("the database".to_string(), size));
        let Some((what, size)) = last.or(db) else {
            return Fact::skipped(FREE_SPACE, DATABASE);
        };
        // The margin `backup db` asks for: 20% and 16 MiB.
        let need = size + size / 5 + 16 * 1024 * 1024;
        let detail = format!(
            "{} free in {}; {what} is {}",
            bytes(avail),
            self.t.backup_dir,
            bytes(size)
        );
        if avail >= need {
            Fact::ok(FREE_SPACE, detail)
        } else {
            Fact::warn(
                FREE_SPACE,
                format!("{detail}: the next backup needs about {}", bytes(need)),
                "free space there, or point `backup_dir` at a larger disk",
            )
        }
    }

    fn sudo(&self) -> Fact {
        if self.host.one("sudo") == Some("root") {
            return Fact::ok(SUDO, "this login is root");
        }
        if let Some(why) = self.host.one("sudo_error") {
            return Fact::fail(
                SUDO,
                format!("`{} -l` fails: {}", self.t.sudo.join(" "), one_line(why)),
                "add a sudoers rule for this login (see `update system`'s help), or set `sudo = []`",
            );
        }
        let rule = |key: &str, command: &str, without: &str| match self.host.one(key) {
            Some("allowed") => format!("{command} allowed"),
            Some("not-needed") => format!("{command} not needed"),
            _ => format!("{command} not allowed ({without})"),
        };
        let disk = rule("sudo_stat", "disk: sudo stat", "log sizes show `?`");
        let incident = rule("sudo_dmesg", "incident: sudo dmesg", "no kernel OOM lines");
        if self.host.one("sudo_apt") == Some("noprefix") {
            return Fact::warn(
                SUDO,
                format!("update system: refused (not root, no `sudo` prefix); {disk}; {incident}"),
                "set `sudo = [\"sudo\", \"-n\"]` and a sudoers rule for apt-get",
            );
        }
        let apt = rule("sudo_apt", "update system: apt-get", "it refuses");
        Fact::ok(SUDO, format!("{apt}; {disk}; {incident}"))
    }

    fn health(&self) -> Fact {
        let url = &self.t.health_url;
        let here = match &self.local_health {
            Ok(code) => Ok(format!("HTTP {code}")).and_then(|d| {
                if (200..300).contains(code) {
                    Ok(d)
                } else {
                    Err(d)
                }
            }),
            Err(why) if why.starts_with("invalid") => {
                return Fact::fail(
                    HEALTH_URL,
                    why.clone(),
                    "set `health_url` to the API's /health",
                )
            }
            Err(why) => Err(why.clone()),
        };
        let said = self
            .host
            .one("host_health")
            .unwrap_or_default()
            .trim()
            .to_string();
        let host = match said.as_str() {
            "no-client" => Err("not checked (no curl or wget on the host)".to_string()),
            s => {
                let code = s.rsplit(' ').next().unwrap_or_default();
                match code.parse::<u16>() {
                    Ok(c) if (200..300).contains(&c) => Ok(format!("HTTP {c}")),
                    Ok(c) if c > 0 && s.len() == code.len() => Err(format!("HTTP {c}")),
                    _ => Err(one_line(s.trim_end_matches(code))),
                }
            }
        };
        let show = |r: &Result<String, String>| match r {
            Ok(d) | Err(d) => d.clone(),
        };
        let detail = format!(
            "{url}: from here {}; from the host {}",
            show(&here),
            show(&host)
        );
        if here.is_ok() && host.is_ok() {
            Fact::ok(HEALTH_URL, detail)
        } else {
            Fact::warn(
                HEALTH_URL,
                detail,
                "deploy's health gate fetches it from here: check the API and `health_url`",
            )
        }
    }

    fn clock(&self) -> Fact {
        let skew = self.host.skew;
        let detail = match skew {
            0 => "the host's clock agrees with this machine's (to the second)".to_string(),
            s if s > 0 => format!("the host's clock is {s} s ahead of this machine's"),
            s => format!("the host's clock is {} s behind this machine's", -s),
        };
        if skew.abs() <= MAX_SKEW_SECS {
            Fact::ok(CLOCK, detail)
        } else {
            Fact::warn(
                CLOCK,
                detail,
                "turn on time synchronisation (NTP) on the host and here: lock ages, backup ages and --as-of use the host's clock",
            )
        }
    }
}

/// `state_dir` (`state`) and `backup_dir` (`backups`): there and writable by this login.
fn dir_fact(t: &Target, host: &HostSaid, name: &'static str, key: &str, lock_files: bool) -> Fact {
    let dir = if lock_files {
        &t.state_dir
    } else {
        &t.backup_dir
    };
    let said = host.one(key).unwrap_or_default();
    let setup = "run `ctops setup` (it prints the commands a person would run as root)";
    if said == "missing" || (lock_files && said == "missing-creatable") {
        return Fact::fail(name, format!("{dir} does not exist"), setup);
    }
    if said == "missing-creatable" {
        return Fact::warn(
            name,
            format!("{dir} does not exist (the first backup creates it)"),
            setup,
        );
    }
    if let Some(owner) = said.strip_prefix("read-only ") {
        return Fact::fail(
            name,
            format!("{dir} ({owner}) is not writable by this login"),
            setup,
        );
    }
    let owner = said.strip_prefix("writable ").unwrap_or(said);
    let stuck = host.all("state_readonly");
    if lock_files && !stuck.is_empty() {
        return Fact::fail(
            name,
            format!(
                "{dir} has files this login cannot write: {}",
                stuck.join(", ")
            ),
            setup,
        );
    }
    Fact::ok(name, format!("{dir} ({owner}) is writable by this login"))
}

/// The subset of the facts that every changing command (`deploy`, `restore`, `rotate`,
/// `env set|unset|edit`) relies on and that nothing else checks before its first change:
/// `state_dir` (the lock, the journal, the history) and `backup_dir` (the copy taken before
/// a change) writable by this login. The rest it needs is checked already by the stack
/// discovery (the services the config names, the database's facts) and by each command's
/// own read of the host (the probe of the checkout, `.env`). A red fact refuses (exit 4: a
/// precondition on the host, which `ctops setup` settles), with nothing changed.
pub async fn before_change(ctx: &Ctx, command: &str) -> Result<(), Error> {
    let t = &ctx.target;
    let remote = ctx.remote().await?;
    let script = format!("{DIRS_SH}\ndir_facts \"$1\" \"$2\"");
    let cmd = RemoteCommand::sh(&script, [t.state_dir.as_str(), t.backup_dir.as_str()])
        .read_only()
        .timeout(t.timeouts.command());
    let out = remote.run(&cmd).await?;
    let host = HostSaid {
        fields: tab_fields(&out.stdout_text()),
        skew: 0,
    };
    let facts = [
        dir_fact(t, &host, STATE_DIR, "state", true),
        dir_fact(t, &host, BACKUP_DIR, "backups", false),
    ];
    let red: Vec<&Fact> = facts.iter().filter(|f| f.level == Level::Fail).collect();
    if red.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = red
        .iter()
        .map(|f| format!("`{}`: {}", f.name, f.detail))
        .collect();
    Err(Error::refused(format!(
        "{command} on {}: {}; nothing was changed",
        remote.host(),
        what.join("; ")
    ))
    .with_help(red[0].fix.clone().unwrap_or_default()))
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Bytes as people read them (binary units).
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Text as one line of at most 300 characters.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let text = "[targets.t]\nssh = \"h\"\n";
        crate::config::parse(text, "c.toml".as_ref(), ".".as_ref(), None)
            .unwrap()
            .target
    }

    fn said<'a>(t: &'a Target, script_output: &str) -> Said<'a> {
        Said {
            t,
            config: Ok(()),
            stack: Err(("no stack".into(), None)),
            services: None,
            missing: Vec::new(),
            hba: Err(None),
            host: HostSaid {
                fields: tab_fields(script_output),
                skew: 0,
            },
            local_health: Ok(200),
        }
    }

    #[test]
    fn a_contradiction_outranks_a_warning_and_skipped_rows_count_for_nothing() {
        let row = |level| Fact::new(CLOCK, level, "d");
        assert_eq!(verdict(&[row(Level::Ok), row(Level::Skipped)]), Exit::Ok);
        assert_eq!(verdict(&[row(Level::Warn), row(Level::Ok)]), Exit::Degraded);
        assert_eq!(verdict(&[row(Level::Warn), row(Level::Fail)]), Exit::Usage);
    }

    #[test]
    fn the_head_is_read_from_the_folder_alembic_ini_names_and_nothing_else() {
        let t = target();
        let out = "cur_ini\tbackend/alembic.ini\n\
                   cur_inil\tbackend/alembic.ini\t[alembic]\n\
                   cur_inil\tbackend/alembic.ini\tscript_location = db\n\
                   cur_tree\tbackend\ncur_tree\tbackend/db\ncur_tree\tbackend/db/versions\n\
                   cur_mig\tabc:backend/db/versions/1.py:revision = \"0001\"\n\
                   cur_mig\tabc:backend/db/versions/1.py:down_revision = None\n\
                   cur_mig\tabc:backend/db/versions/2.py:revision = \"0002\"\n\
                   cur_mig\tabc:backend/db/versions/2.py:down_revision = \"0001\"\n\
                   cur_mig\tabc:tools/other.py:revision = \"zzz\"\n\
                   tgt_ini\tbackend/alembic.ini\n\
                   tgt_inil\tbackend/alembic.ini\tscript_location = db\n";
        let s = said(&t, out);
        assert_eq!(s.head("cur", "abc"), Head::Known(Some("0002".into())));
        // At the branch head the folder is gone: unknown, naming the key that settles it.
        assert!(
            matches!(s.head("tgt", "def"), Head::Unknown(why) if why.contains("deploy.migrate.versions"))
        );
        assert_eq!(s.head("none", "abc"), Head::Absent);
    }

    #[test]
    fn a_state_dir_with_a_file_this_login_cannot_write_is_a_contradiction() {
        let t = target();
        let s = said(&t, "state\twritable deploy:docker 2770\nstate_readonly\tops.flock root:root 644\nbackups\tmissing-creatable\n");
        let state = s.dir_row(STATE_DIR, "state", true);
        assert_eq!(state.level, Level::Fail);
        assert!(
            state.detail.contains("ops.flock root:root 644"),
            "{}",
            state.detail
        );
        assert_eq!(s.dir_row(BACKUP_DIR, "backups", false).level, Level::Warn);
    }

    #[test]
    fn the_host_side_health_answer_is_read_from_curl() {
        let t = target();
        let ok = said(&t, "host_health\t200\n").health();
        assert_eq!(ok.level, Level::Ok, "{}", ok.detail);
        let refused = said(&t, "host_health\tcurl: (7) Failed to connect 000\n").health();
        assert_eq!(refused.level, Level::Warn);
        assert!(
            refused
                .detail
                .contains("from the host curl: (7) Failed to connect"),
            "{}",
            refused.detail
        );
        let status = said(&t, "host_health\t503\n").health();
        assert!(
            status.detail.ends_with("from the host HTTP 503"),
            "{}",
            status.detail
        );
    }
}
