//! The TOML configuration: discovery, strict parsing, and resolution of one target.
//!
//! Parsing is strict (unknown keys and wrong types are errors that name the key and the
//! line, as `toml` reports them). A target may override any shared section; the result is a
//! [`Target`] with every default filled in, which is all the rest of ctops ever sees.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;

use crate::error::Error;

/// Where the config came from, which matters for trust (see [`Loaded::warnings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--config` or `$CTOPS_CONFIG`: named by the user.
    Named,
    /// Found in the current directory: anybody who can write there chose it.
    WorkingDir,
    /// `$XDG_CONFIG_HOME/ctops/config.toml`.
    UserConfig,
}

/// A human duration in the config (`30s`, `5m`, `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// The longest duration ctops takes: far beyond any timeout or age anyone means, and far
/// below what makes `Instant + duration` overflow (a panic, exit 101).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl HumanDuration {
    /// Parses `30s`, `5m`, `1h 30m`; refuses what humantime refuses and anything over
    /// [`MAX_DURATION`].
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        match humantime::parse_duration(text) {
            Ok(d) if d <= MAX_DURATION => Ok(HumanDuration(d)),
            Ok(_) => Err(format!(
                "invalid duration `{text}`: longer than {}",
                humantime::format_duration(MAX_DURATION)
            )),
            Err(e) => Err(format!("invalid duration `{text}`: {e}")),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Copies every field that `over` sets onto `base`.
macro_rules! overlay {
    ($base:expr, $over:expr; $($field:ident),* $(,)?) => {
        $( if $over.$field.is_some() { $base.$field = $over.$field.clone(); } )*
    };
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Option<HumanDuration>,
    pub command: Option<HumanDuration>,
    pub build: Option<HumanDuration>,
    pub migrate: Option<HumanDuration>,
    pub backup: Option<HumanDuration>,
    /// ctops extension: how long one `health` check may take.
    pub check: Option<HumanDuration>,
}

impl Timeouts {
    fn overlay(&mut self, over: &Timeouts) {
        overlay!(self, over; connect, command, build, migrate, backup, check);
    }

    fn with_defaults(mut self) -> Self {
        let d = |s: u64| Some(HumanDuration(Duration::from_secs(s)));
        self.connect = self.connect.or(d(10));
        self.command = self.command.or(d(120));
        self.build = self.build.or(d(15 * 60));
        self.migrate = self.migrate.or(d(5 * 60));
        self.backup = self.backup.or(d(2 * 3600));
        self.check = self.check.or(d(5));
        self
    }

    pub fn connect(&self) -> Duration {
        self.connect.expect("defaults applied").0
    }
    pub fn command(&self) -> Duration {
        self.command.expect("defaults applied").0
    }
    pub fn check(&self) -> Duration {
        self.check.expect("defaults applied").0
    }
    pub fn build(&self) -> Duration {
        self.build.expect("defaults applied").0
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    pub service: Option<String>,
    pub upgrade: Option<Vec<String>>,
    pub current: Option<Vec<String>>,
    pub downgrade: Option<Vec<String>>,
    pub heads: Option<Vec<String>>,
    /// ctops extension: where the migration scripts live in the repository, read at any
    /// ref to learn its head revision without running its code.
    pub versions: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preflight {
    pub commit_pattern: Option<String>,
    pub test_command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub health_timeout: Option<HumanDuration>,
    pub health_interval: Option<HumanDuration>,
    pub stable_for: Option<HumanDuration>,
    pub keep_releases: Option<u32>,
    pub migrate: Option<Migrate>,
    pub notify_url: Option<String>,
    pub notify_command: Option<Vec<String>>,
    pub preflight: Option<Preflight>,
}

impl Deploy {
    fn overlay(&mut self, over: &Deploy) {
        overlay!(self, over; health_timeout, health_interval, stable_for, keep_releases,
                 migrate, notify_url, notify_command, preflight);
    }

    fn with_defaults(mut self) -> Self {
        let d = |s: u64| Some(HumanDuration(Duration::from_secs(s)));
        self.health_timeout = self.health_timeout.or(d(60));
        self.health_interval = self.health_interval.or(d(1));
        self.stable_for = self.stable_for.or(d(10));
        self.keep_releases = self.keep_releases.or(Some(5));
        let words = |w: &[&str]| Some(w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // `service` and `versions` are not defaulted: the stack and the repository tell them
        // (crate::discover), and a config that sets them overrides what they say.
        let mut m = self.migrate.unwrap_or_default();
        m.upgrade = m.upgrade.or(words(&["alembic", "upgrade", "head"]));
        m.current = m.current.or(words(&["alembic", "current"]));
        m.downgrade = m.downgrade.or(words(&["alembic", "downgrade"]));
        m.heads = m.heads.or(words(&["alembic", "heads"]));
        self.migrate = Some(m);
        self.notify_url = self.notify_url.filter(|u| !u.is_empty());
        self.notify_command = self.notify_command.or(Some(Vec::new()));
        let mut p = self.preflight.unwrap_or_default();
        p.commit_pattern = p.commit_pattern.or(Some(
            r"^(feat|fix|docs|chore|refactor|test|perf|ci)(\(.+\))?!?: .+".into(),
        ));
        p.test_command = p.test_command.or(Some(Vec::new()));
        self.preflight = Some(p);
        self
    }
}

/// `[update]`: how `update system` runs apt.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// An apt configuration file on the host read after the system's (`apt-get -c FILE`),
    /// for instance to upgrade from a chosen set of sources only.
    pub apt_config: Option<String>,
}

impl Update {
    fn overlay(&mut self, over: &Update) {
        overlay!(self, over; apt_config);
    }
}

/// One health check beside `health_url`: a command in a service, an HTTP URL that ctops
/// fetches through the SSH connection, or a PostgreSQL or Redis server ctops asks itself
/// over that connection (`ADDR` as the host sees it, or a compose service).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The command's output must contain this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// ctops extension: the HTTP status that means "up" (default: any 2xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// ctops extension: `HOST:PORT` or a compose service, asked with a startup message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// ctops extension: `HOST:PORT` or a compose service, asked with `PING`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

impl Check {
    /// The native kind and where it connects, for a `postgres` or `redis` check.
    pub fn native(&self) -> Option<(crate::probes::Kind, &str)> {
        use crate::probes::Kind;
        match (&self.postgres, &self.redis) {
            (Some(at), None) => Some((Kind::Postgres, at.as_str())),
            (None, Some(at)) => Some((Kind::Redis, at.as_str())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupDb {
    pub service: Option<String>,
    pub user: Option<String>,
    pub database: Option<String>,
    pub keep_days: Option<u32>,
    pub max_age: Option<HumanDuration>,
    /// ctops extension: the services that write to the database, stopped for a restore.
    pub writers: Option<Vec<String>>,
    /// ctops extension: where the clients ctops runs in `service` reach PostgreSQL
    /// (PGHOST/PGPORT), when the container's own environment does not say.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// ctops extension: MiB that must stay free where PostgreSQL keeps its data after a
    /// restore's second copy of the database is made (default 256).
    pub restore_min_free_mb: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupMinio {
    pub endpoint: Option<String>,
    pub access_key_var: Option<String>,
    pub secret_key_var: Option<String>,
    pub buckets: Option<Vec<String>>,
    pub keep_days: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    #[serde(default)]
    pub db: BackupDb,
    #[serde(default)]
    pub minio: BackupMinio,
}

impl Backup {
    fn overlay(&mut self, over: &Backup) {
        overlay!(self.db, over.db; service, user, database, keep_days, max_age, writers, host, port, restore_min_free_mb);
        overlay!(self.minio, over.minio; endpoint, access_key_var, secret_key_var, buckets, keep_days);
    }

    fn with_defaults(mut self) -> Self {
        let s = |v: &str| Some(v.to_string());
        // service, user, database and writers are not defaulted: compose config and the
        // database container tell them (crate::discover).
        self.db.keep_days = self.db.keep_days.or(Some(7));
        self.db.restore_min_free_mb = self.db.restore_min_free_mb.or(Some(256));
        self.db.max_age = self
            .db
            .max_age
            .or(Some(HumanDuration(Duration::from_secs(26 * 3600))));
        self.minio.endpoint = self.minio.endpoint.or(s("http://127.0.0.1:9000"));
        self.minio.access_key_var = self.minio.access_key_var.or(s("MINIO_ROOT_USER"));
        self.minio.secret_key_var = self.minio.secret_key_var.or(s("MINIO_ROOT_PASSWORD"));
        self.minio.buckets = self.minio.buckets.or(Some(Vec::new()));
        self.minio.keep_days = self.minio.keep_days.or(Some(30));
        self
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub restart: Vec<String>,
    #[serde(default)]
    pub revoked_on_rotate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    ssh: String,
    ssh_config: Option<String>,
    sudo: Option<Vec<String>>,
    protected: Option<bool>,
    dir: Option<String>,
    compose_file: Option<String>,
    compose: Option<Vec<String>>,
    compose_project: Option<String>,
    branch: Option<String>,
    health_url: Option<String>,
    gate_url: Option<String>,
    env_file: Option<String>,
    backup_dir: Option<String>,
    local_dir: Option<String>,
    state_dir: Option<String>,
    group: Option<String>,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    deploy: Deploy,
    #[serde(default)]
    update: Update,
    #[serde(default)]
    checks: BTreeMap<String, Check>,
    #[serde(default)]
    backup: Backup,
    #[serde(default)]
    secrets: BTreeMap<String, Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_target: Option<Spanned<String>>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<RawTarget>>,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    deploy: Deploy,
    #[serde(default)]
    update: Update,
    #[serde(default)]
    checks: BTreeMap<String, Check>,
    #[serde(default)]
    backup: Backup,
    #[serde(default)]
    secrets: BTreeMap<String, Secret>,
}

/// Everything ctops knows about one target, defaults filled in.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub ssh: String,
    pub ssh_config: Option<PathBuf>,
    pub sudo: Vec<String>,
    pub protected: bool,
    pub dir: String,
    pub compose_file: String,
    pub compose: Vec<String>,
    pub compose_project: Option<String>,
    pub branch: String,
    /// Fetched from the operator's machine by `health`.
    pub health_url: String,
    /// ctops extension: the API's health URL as seen from the host, fetched there (with
    /// curl) by the deploy, restore, env and update gates [default: health_url]. With split
    /// DNS or a firewall the two differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_url: Option<String>,
    pub env_file: String,
    pub backup_dir: String,
    pub local_dir: PathBuf,
    /// ctops extension: the host folder for the lock, the journal of operations in flight,
    /// the release history and the audit log; outside git's reach, shared by every operator.
    pub state_dir: String,
    /// ctops extension: the host group that shares `state_dir` and `backup_dir` (and the
    /// checkout) among the operators' logins, set up by `ctops setup`. `docker` by default:
    /// every account that runs compose is in it already, and it is root-equivalent anyway.
    pub group: String,
    pub timeouts: Timeouts,
    pub deploy: Deploy,
    pub update: Update,
    pub checks: BTreeMap<String, Check>,
    pub backup: Backup,
    pub secrets: BTreeMap<String, Secret>,
    /// Facts the config leaves to the host that `discover` could not read: the config key
    /// and why. A command that needs one refuses, naming the key.
    #[serde(skip)]
    pub unknown: BTreeMap<&'static str, String>,
}

impl Target {
    /// The URL the health gates fetch on the host.
    pub fn gate_url(&self) -> &str {
        self.gate_url.as_deref().unwrap_or(&self.health_url)
    }

    /// A value the config may leave to the stack: set or discovered, else a refusal that
    /// names the key that would settle it.
    pub fn fact<'a>(&self, key: &'static str, value: &'a Option<String>) -> Result<&'a str, Error> {
        value.as_deref().ok_or_else(|| {
            let why = self
                .unknown
                .get(key)
                .map_or("nothing on the host told it", String::as_str);
            Error::usage(format!(
                "`{key}` is not set, and ctops cannot tell it for target `{}`: {why}",
                self.name
            ))
            .with_help(format!(
                "set `{key}` in the config (see `ctops config check`)"
            ))
        })
    }
}

/// A loaded config file with the chosen target resolved.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub target: Target,
    pub warnings: Vec<String>,
}

/// The config file to use: `--config`, `$CTOPS_CONFIG` (both arrive as `explicit`),
/// `./ctops.toml`, `./config/ctops.toml`, then `$XDG_CONFIG_HOME/ctops/config.toml`.
pub fn discover(explicit: Option<&Path>) -> Result<(PathBuf, Origin), Error> {
    if let Some(path) = explicit {
        return Ok((path.to_path_buf(), Origin::Named));
    }
    for candidate in ["ctops.toml", "config/ctops.toml"] {
        if Path::new(candidate).is_file() {
            return Ok((PathBuf::from(candidate), Origin::WorkingDir));
        }
    }
    let user_config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|base| base.join("ctops/config.toml"));
    match user_config {
        Some(path) if path.is_file() => Ok((path, Origin::UserConfig)),
        _ => Err(Error::usage("no config file found").with_help(
            "pass --config PATH or set CTOPS_CONFIG; also searched ./ctops.toml, \
             ./config/ctops.toml and $XDG_CONFIG_HOME/ctops/config.toml",
        )),
    }
}

/// Reads, parses and resolves the config for `target` (or the default target).
pub fn load(path: &Path, origin: Origin, target: Option<&str>) -> Result<Loaded, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read config `{}`: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let base = std::path::absolute(&base).unwrap_or(base);
    let mut loaded = parse(&text, path, &base, target)?;
    if origin == Origin::WorkingDir && loaded.target.ssh_config.is_some() {
        loaded.warnings.push(format!(
            "`{}` was found in the current directory and names an ssh_config: \
             any ProxyCommand in it runs on this machine",
            path.display()
        ));
    }
    Ok(loaded)
}

/// Parses config text; `base` is the folder relative paths are resolved against.
pub fn parse(text: &str, path: &Path, base: &Path, target: Option<&str>) -> Result<Loaded, Error> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        Error::usage(format!(
            "invalid config `{}`: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    if let Some(key) = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|table| key_with_nul(&toml::Value::Table(table)))
    {
        return Err(Error::usage(format!(
            "invalid config `{}`: `{key}` holds a NUL byte (\\u0000), which no path, command or name can carry",
            path.display()
        )));
    }
    let name = match target {
        Some(name) => name.to_string(),
        None => match (&raw.default_target, raw.targets.len()) {
            (Some(d), _) => d.get_ref().clone(),
            (None, 1) => raw.targets.keys().next().cloned().expect("one target"),
            (None, _) => {
                return Err(Error::usage(format!(
                    "config `{}` has {} targets and no `default_target`",
                    path.display(),
                    raw.targets.len()
                ))
                .with_help("pass --target NAME or set CTOPS_TARGET"))
            }
        },
    };
    let Some(spanned) = raw.targets.get(&name) else {
        let known: Vec<_> = raw.targets.keys().map(String::as_str).collect();
        let whence = match (&raw.default_target, target) {
            (Some(d), None) => format!(
                " (`default_target` at line {})",
                line_of(text, d.span().start)
            ),
            _ => String::new(),
        };
        return Err(Error::usage(format!(
            "target `{name}`{whence} is not defined in `{}`",
            path.display()
        ))
        .with_help(format!(
            "defined targets: {}",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    };
    let line = line_of(text, spanned.span().start);
    let t = spanned.get_ref();
    let resolved = resolve(&raw, t, &name, base).map_err(|msg| {
        Error::usage(format!(
            "`targets.{name}` (line {line}) in `{}`: {msg}",
            path.display()
        ))
    })?;
    Ok(Loaded {
        path: path.to_path_buf(),
        target: resolved,
        warnings: Vec::new(),
    })
}

fn resolve(raw: &RawConfig, t: &RawTarget, name: &str, base: &Path) -> Result<Target, String> {
    let mut timeouts = raw.timeouts.clone();
    timeouts.overlay(&t.timeouts);
    let mut deploy = raw.deploy.clone();
    deploy.overlay(&t.deploy);
    let mut update = raw.update.clone();
    update.overlay(&t.update);
    let mut backup = raw.backup.clone();
    backup.overlay(&t.backup);
    let mut checks = raw.checks.clone();
    checks.extend(t.checks.clone());
    let mut secrets = raw.secrets.clone();
    secrets.extend(t.secrets.clone());

    for (check_name, check) in &checks {
        validate_check(check_name, check)?;
    }
    let compose = t
        .compose
        .clone()
        .unwrap_or_else(|| vec!["docker".into(), "compose".into()]);
    if compose.is_empty() {
        return Err("`compose` must name a command, e.g. [\"docker\", \"compose\"]".into());
    }
    if t.ssh.trim().is_empty() {
        return Err("`ssh` is empty".into());
    }
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    Ok(Target {
        name: name.to_string(),
        ssh: t.ssh.clone(),
        ssh_config: t
            .ssh_config
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|p| local_path(base, p)),
        sudo: t.sudo.clone().unwrap_or_default(),
        protected: t.protected.unwrap_or(false),
        dir: or(&t.dir, "/opt/trader-psy"),
        compose_file: or(&t.compose_file, "infrastructure/docker-compose.yml"),
        compose,
        compose_project: t.compose_project.clone().filter(|p| !p.is_empty()),
        branch: or(&t.branch, "main"),
        health_url: or(&t.health_url, "http://127.0.0.1:8000/health"),
        gate_url: t.gate_url.clone().filter(|u| !u.is_empty()),
        env_file: or(&t.env_file, "infrastructure/.env"),
        backup_dir: or(&t.backup_dir, "/opt/backups"),
        local_dir: local_path(
            base,
            t.local_dir.as_deref().unwrap_or("~/calmtrader-backups"),
        ),
        state_dir: or(&t.state_dir, "/var/lib/ctops"),
        group: or(&t.group, "docker"),
        timeouts: timeouts.with_defaults(),
        deploy: deploy.with_defaults(),
        update,
        checks,
        backup: backup.with_defaults(),
        secrets,
        unknown: BTreeMap::new(),
    })
}

fn validate_check(name: &str, check: &Check) -> Result<(), String> {
    let native = check.postgres.is_some() || check.redis.is_some();
    if native {
        let alone = Check {
            postgres: check.postgres.clone(),
            redis: check.redis.clone(),
            ..Check::default()
        };
        return match check.native() {
            Some((_, at)) if *check == alone => validate_endpoint(name, at),
            _ => Err(format!(
                "check `{name}`: `postgres = ADDR|SERVICE` and `redis = ADDR|SERVICE` stand alone (one of them, no other key)"
            )),
        };
    }
    match (&check.http, &check.service, &check.command) {
        (Some(_), None, None) => Ok(()),
        (None, Some(_), Some(cmd)) if !cmd.is_empty() => Ok(()),
        _ => Err(format!(
            "check `{name}` needs `http = URL`, both `service` and a non-empty `command`, `postgres = ADDR|SERVICE` or `redis = ADDR|SERVICE`"
        )),
    }
}

/// `HOST:PORT`, or a compose service name.
fn validate_endpoint(name: &str, at: &str) -> Result<(), String> {
    match crate::probes::parse_endpoint(at) {
        crate::probes::Endpoint::Address { .. } => Ok(()),
        crate::probes::Endpoint::Service(service) => {
            crate::compose::validate_service_name(&service).map_err(|_| {
                format!("check `{name}`: {at:?} is neither HOST:PORT nor a compose service name")
            })
        }
    }
}

/// The dotted key of the first string (or key) that holds a NUL: TOML escapes allow one
/// (`\u0000`), and every string of the config ends up in a path, an argv or a file name.
fn key_with_nul(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) if s.contains('\0') => Some(String::new()),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| key_with_nul(v).map(|rest| format!("[{i}]{}", dotted("", &rest)))),
        toml::Value::Table(table) => table.iter().find_map(|(k, v)| {
            let name = k.replace('\0', "\\u0000");
            if k.contains('\0') {
                return Some(name);
            }
            key_with_nul(v).map(|rest| dotted(&name, &rest))
        }),
        _ => None,
    }
}

fn dotted(key: &str, rest: &str) -> String {
    match (key.is_empty(), rest.is_empty() || rest.starts_with('[')) {
        (_, true) => format!("{key}{rest}"),
        (true, false) => rest.to_string(),
        (false, false) => format!("{key}.{rest}"),
    }
}

/// A local path from the config: `~` is the home directory, relative is relative to the
/// config file's folder.
fn local_path(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = include_str!("../config/ctops.toml");

    fn parse_str(text: &str, target: Option<&str>) -> Result<Loaded, Error> {
        parse(text, Path::new("test.toml"), Path::new("/cfg"), target)
    }

    #[test]
    fn the_gate_fetches_gate_url_when_set_and_health_url_otherwise() {
        let t = parse_str(SPEC_EXAMPLE, None).unwrap().target;
        assert_eq!(t.gate_url(), "https://api.calmtrader.ai/health");
        let text = SPEC_EXAMPLE.replace(
            "health_url = \"https://api.calmtrader.ai/health\"",
            "health_url = \"https://api.calmtrader.ai/health\"\ngate_url = \"http://127.0.0.1:8000/health\"",
        );
        let t = parse_str(&text, None).unwrap().target;
        assert_eq!(t.gate_url(), "http://127.0.0.1:8000/health");
        assert_eq!(t.health_url, "https://api.calmtrader.ai/health");
    }

    #[test]
    fn the_production_config_parses_with_runbook_values() {
        let t = parse_str(SPEC_EXAMPLE, None).unwrap().target;
        assert_eq!(t.name, "production");
        assert_eq!(t.ssh, "trader-psy");
        assert_eq!(t.dir, "/opt/trader-psy");
        assert_eq!(t.compose_file, "infrastructure/docker-compose.yml");
        assert_eq!(t.health_url, "https://api.calmtrader.ai/health");
        assert_eq!(t.backup_dir, "/opt/backups");
        assert!(t.protected);
        assert_eq!(t.timeouts.connect(), Duration::from_secs(10));
        // The runbook's own check: which ports production publishes is not known.
        assert_eq!(t.checks["redis"].native(), None);
        assert_eq!(t.checks["redis"].expect.as_deref(), Some("PONG"));
        assert!(t.secrets["TELEGRAM_BOT_TOKEN"].revoked_on_rotate);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse_str("[targets.a]\nssh = \"h\"\nsssh = \"x\"\n", None).unwrap_err();
        assert!(err.message.contains("sssh"), "{}", err.message);
        assert!(err.message.contains("line 3"), "{}", err.message);
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let err = parse_str("[targets.a]\nssh = \"h\"\nprotected = \"yes\"\n", None).unwrap_err();
        assert!(err.message.contains("line 3"), "{}", err.message);
        assert!(
            err.message.contains("bool") || err.message.contains("boolean"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_duration_is_named_with_its_line() {
        let err = parse_str(
            "[timeouts]\nconnect = \"soon\"\n[targets.a]\nssh = \"h\"\n",
            None,
        )
        .unwrap_err();
        assert!(
            err.message.contains("line 2") && err.message.contains("soon"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_target_names_the_default_target_line() {
        let text = "default_target = \"prod\"\n[targets.staging]\nssh = \"h\"\n";
        let err = parse_str(text, None).unwrap_err();
        assert!(
            err.message.contains("`prod`") && err.message.contains("line 1"),
            "{}",
            err.message
        );
        assert!(err.help.unwrap().contains("staging"));
        let err = parse_str(text, Some("nope")).unwrap_err();
        assert!(err.message.contains("`nope`"));
    }

    #[test]
    fn target_overrides_shared_sections_field_by_field() {
        let text = r#"
[timeouts]
connect = "3s"
command = "1m"
[checks]
redis = { service = "redis", command = ["redis-cli", "ping"], expect = "PONG" }
[targets.a]
ssh = "h"
[targets.a.timeouts]
command = "5m"
[targets.a.checks]
web = { http = "http://127.0.0.1:1/" }
"#;
        let t = parse_str(text, None).unwrap().target;
        assert_eq!(t.timeouts.connect(), Duration::from_secs(3));
        assert_eq!(t.timeouts.command(), Duration::from_secs(300));
        assert_eq!(t.checks.len(), 2);
    }

    #[test]
    fn relative_local_paths_resolve_against_the_config_folder() {
        let t = parse_str(
            "[targets.a]\nssh = \"h\"\nssh_config = \"ssh/config\"\nlocal_dir = \"b\"\n",
            None,
        )
        .unwrap()
        .target;
        assert_eq!(t.ssh_config.unwrap(), PathBuf::from("/cfg/ssh/config"));
        assert_eq!(t.local_dir, PathBuf::from("/cfg/b"));
    }

    #[test]
    fn a_check_must_be_http_or_a_command() {
        let err = parse_str(
            "[checks]\nx = { service = \"a\" }\n[targets.a]\nssh = \"h\"\n",
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("check `x`"), "{}", err.message);
    }

    /// Found with the corpus (`config/duration-overflow.toml`): `connect =
    /// "18446744073709551615s"` loaded, and the first command panicked (exit 101) adding it
    /// to the clock.
    #[test]
    fn a_duration_too_long_to_add_to_the_clock_is_refused_naming_the_key() {
        let err = parse_str(
            "[targets.a]\nssh = \"h\"\n[targets.a.timeouts]\nconnect = \"18446744073709551615s\"\n",
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("connect"), "{}", err.message);
        assert!(err.message.contains("longer than"), "{}", err.message);
        parse_str(
            "[timeouts]\nbackup = \"99years\"\n[targets.a]\nssh = \"h\"\n",
            None,
        )
        .unwrap();
    }

    /// Found with the corpus (`config/dir-nul.toml`): a `\u0000` in `dir` loaded, and every
    /// command failed as a lost connection (exit 3).
    #[test]
    fn a_nul_in_any_string_is_refused_naming_the_key() {
        for (text, key) in [
            ("[targets.a]\nssh = \"h\"\ndir = \"/srv\\u0000x\"\n", "`targets.a.dir`"),
            (
                "[checks]\nx = { service = \"r\", command = [\"a\", \"b\\u0000\"] }\n[targets.a]\nssh = \"h\"\n",
                "`checks.x.command[1]`",
            ),
            ("[secrets]\n\"K\\u0000\" = {}\n[targets.a]\nssh = \"h\"\n", "`secrets.K\\u0000`"),
        ] {
            let err = parse_str(text, None).unwrap_err();
            assert!(err.message.contains(key), "{key}: {}", err.message);
            assert_eq!(err.exit, crate::error::Exit::Usage);
        }
    }

    #[test]
    fn a_native_check_names_an_address_or_a_service_and_nothing_else() {
        let parse = |check: &str| {
            parse_str(
                &format!("[checks]\nx = {check}\n[targets.a]\nssh = \"h\"\n"),
                None,
            )
        };
        let t = parse(r#"{ postgres = "127.0.0.1:5432" }"#).unwrap().target;
        assert_eq!(
            t.checks["x"].native(),
            Some((crate::probes::Kind::Postgres, "127.0.0.1:5432"))
        );
        let t = parse(r#"{ redis = "cache" }"#).unwrap().target;
        assert_eq!(
            t.checks["x"].native(),
            Some((crate::probes::Kind::Redis, "cache"))
        );
        for bad in [
            r#"{ redis = "cache", expect = "PONG" }"#,
            r#"{ redis = "a:1", postgres = "b:2" }"#,
            r#"{ redis = "no such/service" }"#,
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.message.contains("check `x`"), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn several_targets_need_a_choice() {
        let err =
            parse_str("[targets.a]\nssh = \"h\"\n[targets.b]\nssh = \"h\"\n", None).unwrap_err();
        assert!(err.message.contains("default_target"));
    }
}

/// Property tests: any config text loads or is refused with a message that names the key
/// (or shows the line that holds it); the loader never panics.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Sections and the keys they take (`*` for a free name: a check, a secret).
    const SECTIONS: &[(&str, &[&str])] = &[
        ("", &["default_target"]),
        (
            "targets.t",
            &[
                "ssh",
                "ssh_config",
                "sudo",
                "protected",
                "dir",
                "compose_file",
                "compose",
                "compose_project",
                "branch",
                "health_url",
                "env_file",
                "backup_dir",
                "local_dir",
                "state_dir",
            ],
        ),
        (
            "timeouts",
            &["connect", "command", "build", "migrate", "backup", "check"],
        ),
        ("targets.t.timeouts", &["connect", "command"]),
        (
            "deploy",
            &[
                "health_timeout",
                "health_interval",
                "stable_for",
                "keep_releases",
                "notify_url",
                "notify_command",
            ],
        ),
        (
            "deploy.migrate",
            &[
                "service",
                "upgrade",
                "current",
                "downgrade",
                "heads",
                "versions",
            ],
        ),
        ("deploy.preflight", &["commit_pattern", "test_command"]),
        ("update", &["apt_config"]),
        (
            "checks.x",
            &["service", "command", "expect", "http", "expect_status"],
        ),
        (
            "backup.db",
            &[
                "service",
                "user",
                "database",
                "keep_days",
                "max_age",
                "writers",
                "host",
                "port",
            ],
        ),
        (
            "backup.minio",
            &[
                "endpoint",
                "access_key_var",
                "secret_key_var",
                "buckets",
                "keep_days",
            ],
        ),
        (
            "secrets.K",
            &["restart", "revoked_on_rotate", "postgres_role"],
        ),
    ];

    /// TOML values of every type, hostile strings among them.
    fn value() -> impl Strategy<Value = String> {
        let text = prop_oneof![
            "[ -~]{0,20}",
            Just("5s".to_string()),
            Just("584942417355years".to_string()),
            Just("../../etc/passwd".to_string()),
            Just("$(touch /tmp/x)".to_string()),
            Just("a\0b".to_string()),
            Just("18446744073709551615s".to_string()),
            any::<String>(),
        ];
        prop_oneof![
            text.clone().prop_map(|s| toml_string(&s)),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            proptest::collection::vec(text, 0..3).prop_map(|v| format!(
                "[{}]",
                v.iter()
                    .map(|s| toml_string(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Just("{ a = 1 }".to_string()),
            Just("1979-05-27T07:32:00Z".to_string()),
        ]
    }

    fn toml_string(s: &str) -> String {
        serde_json::to_string(s).expect("a string")
    }

    /// One `key = value` placed in a section of an otherwise valid config; the key known
    /// there or not.
    fn config() -> impl Strategy<Value = (String, String)> {
        (
            0..SECTIONS.len(),
            any::<prop::sample::Index>(),
            "[a-z_]{1,10}",
            any::<bool>(),
            value(),
        )
            .prop_map(|(section, pick, unknown, known, value)| {
                let (name, keys) = SECTIONS[section];
                let key = if known {
                    pick.get(keys).to_string()
                } else {
                    unknown
                };
                let base = "[targets.t]\nssh = \"h\"\n";
                let line = format!("{key} = {value}\n");
                let text = match name {
                    "" => format!("{line}{base}"),
                    "targets.t" => format!("{base}{line}"),
                    // A check needs a service and a command (or http) to be whole.
                    "checks.x" => format!("{base}[{name}]\nhttp = \"http://127.0.0.1/\"\n{line}"),
                    _ => format!("{base}[{name}]\n{line}"),
                };
                (text, key)
            })
    }

    proptest! {
        #[test]
        fn a_refused_config_names_the_key(config in config()) {
            let (text, key) = config;
            if let Err(e) = parse(&text, Path::new("c.toml"), Path::new("/cfg"), None) {
                let said = format!("{} {}", e.message, e.help.unwrap_or_default());
                prop_assert!(
                    said.contains(&key) || said.contains("check `x`"),
                    "{key:?} not named in {said:?} for\n{text}"
                );
                prop_assert_eq!(e.exit, crate::error::Exit::Usage);
            }
        }

        #[test]
        fn any_text_loads_or_is_refused_without_panicking(text in any::<String>()) {
            let _ = parse(&text, Path::new("c.toml"), Path::new("/cfg"), None);
        }
    }
}

/// The README's config reference checked against the config types, both ways: every key
/// in the table deserialises (the types deny unknown fields), and every field of every
/// table the types define is in the table (serde names them when refusing an unknown one).
#[cfg(test)]
mod reference_tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::RawConfig;

    const README: &str = include_str!("../README.md");

    /// (key, type) of every row of the README's "Config reference" table.
    fn rows() -> Vec<(String, String)> {
        let section = README
            .split("\n## Config reference\n")
            .nth(1)
            .expect("README has a `## Config reference` section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let rows: Vec<(String, String)> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .map(|l| {
                let (key, rest) = l.split_once("` | ").expect("| `key` | type | ...");
                let ty = rest.split(" | ").next().unwrap_or_default();
                (key.to_string(), ty.to_string())
            })
            .collect();
        assert!(rows.len() > 40, "the table was not found: {rows:?}");
        rows
    }

    /// A key of the table as a concrete TOML path (placeholders named).
    fn concrete(key: &str) -> Vec<String> {
        key.split('.')
            .map(|w| match w {
                "NAME" => "n".to_string(),
                "KEY" => "K".to_string(),
                w => w.to_string(),
            })
            .collect()
    }

    fn sample(ty: &str) -> toml::Value {
        let s = |v: &str| toml::Value::String(v.into());
        match ty {
            "string" | "path" => s("x"),
            "url" => s("http://127.0.0.1:1/"),
            "regex" => s("^x"),
            "duration" => s("1s"),
            "bool" => toml::Value::Boolean(true),
            "integer" => toml::Value::Integer(1),
            "list" | "command" => toml::Value::Array(vec![s("x")]),
            other => panic!("unknown type `{other}` in the config reference"),
        }
    }

    #[test]
    fn every_key_of_the_reference_is_a_config_key() {
        let mut doc = toml::Table::new();
        for (key, ty) in rows() {
            let path = concrete(&key);
            let (last, parents) = path.split_last().unwrap();
            let mut table = &mut doc;
            for p in parents {
                table = table
                    .entry(p.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .unwrap();
            }
            table.insert(last.clone(), sample(&ty));
        }
        let text = toml::to_string(&doc).unwrap();
        if let Err(e) = toml::from_str::<RawConfig>(&text) {
            panic!("the config reference names a key the config refuses: {e}\n{text}");
        }
    }

    /// The fields serde expects in the table at `path` (root: empty), read from the error
    /// an unknown key there gets.
    fn fields_of(path: &[String]) -> BTreeSet<String> {
        let text = match path {
            [] => "zz_unknown = 1\n[targets.n]\nssh = \"h\"\n".to_string(),
            [t, n] if t == "targets" && n == "n" => {
                "[targets.n]\nssh = \"h\"\nzz_unknown = 1\n".to_string()
            }
            _ => format!(
                "[targets.n]\nssh = \"h\"\n[{}]\nzz_unknown = 1\n",
                path.join(".")
            ),
        };
        let err = toml::from_str::<RawConfig>(&text)
            .expect_err("an unknown key is refused")
            .to_string();
        let expected = err
            .split("expected")
            .nth(1)
            .unwrap_or_else(|| panic!("{err}"));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_config_key_is_in_the_reference() {
        // Each table the reference reaches into, with the keys it lists there.
        let mut tables: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
        for (key, _) in rows() {
            let path = concrete(&key);
            for depth in 0..path.len() {
                let table = path[..depth].to_vec();
                // `checks.n`, `secrets.K`, `targets.n`: maps whose keys are names.
                if matches!(table.as_slice(), [s] if s == "targets" || s == "checks" || s == "secrets")
                {
                    continue;
                }
                tables.entry(table).or_default().insert(path[depth].clone());
            }
        }
        let root = tables[&Vec::new()].clone();
        let sections: BTreeSet<String> = root
            .iter()
            .filter(|k| *k != "default_target" && *k != "targets")
            .cloned()
            .collect();
        let mut missing = Vec::new();
        for (table, mut listed) in tables {
            if table == ["targets", "n"] {
                // A target may override every shared section.
                listed.extend(sections.iter().cloned());
            }
            let real = fields_of(&table);
            for k in real.difference(&listed) {
                missing.push(format!(
                    "`{}` is not in the reference",
                    [table.join("."), k.clone()].join(".")
                ));
            }
            for k in listed.difference(&real) {
                missing.push(format!(
                    "`{}` is in the reference, not in the config",
                    [table.join("."), k.clone()].join(".")
                ));
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
