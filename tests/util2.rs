//! The second sandbox profile (`tests/sandbox/second/`, README there): a host laid out
//! differently from the first one, driven with a config that says only what an operator knows
//! (`ssh`, `dir`, `compose_file`, `branch`, `health_url`, `env_file`, `backup_dir`, `sudo`,
//! `[secrets]`); ctops must find the rest. Helpers to run ctops against it and to look at the
//! host directly.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::util::{ctops, host, Ctops};

/// The checkout (a path with a space), on branch `trunk`.
pub const DIR2: &str = "/srv/calm trader/app";
pub const BACKUPS2: &str = "/srv/calm trader/backups";
pub const ENV2: &str = "/srv/calm trader/app/deploy/.env";
pub const HEALTH2: &str = "http://127.0.0.1:28000/health";
/// ctops's default `state_dir`, prepared on the host as `ctops setup` would.
pub const STATE_DIR2: &str = "/var/lib/ctops";
pub const PROJECT2: &str = "calmstack";
pub const PG_PORT2: &str = "25432";
pub const DB2: &str = "calmdb";
/// The superuser (`POSTGRES_USER` in the db service's environment).
pub const DB_SUPERUSER2: &str = "calmadmin";
/// The app's role; its password is `APP_DB_PASSWORD` in `.env`, also inside `DATABASE_URL`.
pub const DB_APP_ROLE2: &str = "calm_app";
pub const INITIAL_REF2: &str = "r2";
pub const INITIAL_VERSION2: &str = "3.1.0";
pub const INITIAL_REVISION2: &str = "a2";

/// The second profile has its own host, so its tests only wait for each other.
static SECOND_LOCK: RwLock<()> = RwLock::new(());

/// Tests that only read the second profile's host run together.
pub fn shared2() -> RwLockReadGuard<'static, ()> {
    SECOND_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Tests that change the second profile's host run alone.
pub fn exclusive2() -> RwLockWriteGuard<'static, ()> {
    SECOND_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// The second profile's state folder; the tests fail (never skip) when it is not provisioned.
pub fn sandbox2() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("CTOPS_SANDBOX2").unwrap_or_else(|_| "/var/tmp/ctops-sandbox2".into()),
    );
    assert!(
        dir.join("ctops.toml").is_file(),
        "no second sandbox at {}: run `tests/sandbox/sandbox.sh --second up` (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// The minimal config the second profile's `up` and `reset-host` write.
pub fn second_config() -> PathBuf {
    sandbox2().join("ctops.toml")
}

/// `ctops ARGS...` with the second profile's minimal config.
pub fn second_ctops<I, S>(args: I) -> Ctops
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    ctops(args).env("CTOPS_CONFIG", second_config())
}

/// Puts the second profile's host back to its initial state: r2 on trunk, revision a2 with
/// the seed rows, no backups, nothing in the state dir, only the initial images.
pub fn second_reset_host() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sandbox/sandbox.sh");
    let out = Command::new(script)
        .args(["--second", "reset-host"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sandbox.sh --second reset-host: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The id of the container of a second-profile service.
pub fn second_container(service: &str) -> String {
    let ids = host(&format!(
        "docker ps -aq --filter label=com.docker.compose.project={PROJECT2} \
         --filter label=com.docker.compose.service={service} \
         --filter label=com.docker.compose.oneoff=False"
    ));
    ids.lines()
        .next()
        .unwrap_or_else(|| panic!("no container for {service} in {PROJECT2}"))
        .to_string()
}

/// SQL as the superuser over the db container's socket; the rows as `psql -At` prints them.
pub fn second_psql(database: &str, sql: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", "-i", &second_container("db")])
        .args([
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            DB_SUPERUSER2,
        ])
        .args(["-d", database, "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The schema's alembic revision.
pub fn second_revision() -> String {
    second_psql(DB2, "SELECT version_num FROM alembic_version")
}

/// Every note, ordered, with every column the schema has at the time.
pub fn second_rows() -> String {
    second_psql(
        DB2,
        "SELECT row_to_json(n)::text FROM notes AS n ORDER BY id",
    )
}

/// Adds a note (so a test can see it survive a step) and returns its body.
pub fn second_add_note(body: &str) -> String {
    second_psql(
        DB2,
        &format!("INSERT INTO notes (author, body) VALUES ('itest', '{body}')"),
    );
    body.to_string()
}

/// The tables of the app's schema, sorted (a way to see which revisions are applied).
pub fn second_tables() -> Vec<String> {
    second_psql(
        DB2,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// The columns of `notes`, in order.
pub fn second_note_columns() -> Vec<String> {
    second_psql(
        DB2,
        "SELECT column_name FROM information_schema.columns \
         WHERE table_name = 'notes' ORDER BY ordinal_position",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// What the web service's /health answers.
pub fn second_health() -> serde_json::Value {
    let body = host(&format!("curl -s -m 5 {HEALTH2}"));
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("/health: {body}"))
}

pub fn second_version() -> String {
    second_health()["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The last value of `key` in the live `.env`.
pub fn second_env_value(key: &str) -> String {
    std::fs::read_to_string(ENV2)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_default()
        .to_string()
}

/// A password login as the app's role over TCP to `address` (`::1` checks the password,
/// `127.0.0.1` trusts anybody, as the official image's pg_hba does).
pub fn second_login(address: &str, password: &str) -> bool {
    Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-X",
            "-w",
            "-h",
            address,
            "-p",
            PG_PORT2,
            "-U",
            DB_APP_ROLE2,
        ])
        .args(["-d", DB2, "-c", "SELECT 1"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn second_head_commit() -> String {
    host(&format!(
        "git -c safe.directory='*' -C '{DIR2}' rev-parse HEAD"
    ))
    .trim()
    .to_string()
}

pub fn second_commit_of(reference: &str) -> String {
    host(&format!(
        "git -c safe.directory='*' -C '{DIR2}' rev-parse '{reference}^{{commit}}'"
    ))
    .trim()
    .to_string()
}

/// The state of a service's container (`running`, `exited`, ...).
pub fn second_state(service: &str) -> String {
    host(&format!(
        "docker inspect -f '{{{{.State.Status}}}}' {}",
        second_container(service)
    ))
    .trim()
    .to_string()
}
