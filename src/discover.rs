//! Facts ctops asks the host for instead of assuming the sandbox's names (SPEC principle 9):
//! the database service, its user and database, the service that runs migrations, the
//! services that write to the database, a release's migration head, and the database's
//! revision. A fact nobody can tell is recorded as unknown with the reason, and the command
//! that needs it refuses before its first change, naming the config key that settles it.
//! A failed query is "unknown", never "none".

use std::collections::BTreeMap;

use crate::compose::{exec_in_service, Stack};
use crate::config::Target;
use crate::error::Error;
use crate::migrations::{versions_dirs, Graph, Head};
use crate::remote::{Remote, RemoteCommand};

const MIGRATIONS_SH: &str = include_str!("scripts/migrations.sh");
const GIT_PROBE_SH: &str = include_str!("scripts/git-probe.sh");
const REVISIONS_SH: &str = include_str!("scripts/revisions.sh");
const HAS_ALEMBIC_INI_SH: &str = include_str!("scripts/has-alembic-ini.sh");

/// The probe of what the checkout runs and what a ref would run (see git-probe.sh).
pub fn git_probe(t: &Target, reference: Option<&str>) -> RemoteCommand {
    let versions = t
        .deploy
        .migrate
        .as_ref()
        .and_then(|m| m.versions.clone())
        .unwrap_or_default();
    RemoteCommand::sh(
        &format!("{MIGRATIONS_SH}\n{GIT_PROBE_SH}"),
        [
            t.dir.as_str(),
            versions.as_str(),
            reference.unwrap_or(""),
            t.branch.as_str(),
        ],
    )
    .read_only()
    .timeout(t.timeouts.command())
}

/// One service of `compose config --format json`, as far as discovery needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceDef {
    pub image: String,
    /// The `build` section as compose resolved it (`None`: not built from the checkout).
    pub build: Option<serde_json::Value>,
    pub built: bool,
    pub environment: BTreeMap<String, String>,
}

/// The services of `compose config --format json` (environment with env_file inlined).
pub fn parse_services(json: &[u8]) -> Result<BTreeMap<String, ServiceDef>, Error> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::failed(format!("cannot read `compose config` output: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, def) in v["services"].as_object().into_iter().flatten() {
        let environment = def["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        out.insert(
            name.clone(),
            ServiceDef {
                image: def["image"].as_str().unwrap_or_default().to_string(),
                build: def.get("build").cloned(),
                built: def.get("build").is_some(),
                environment,
            },
        );
    }
    Ok(out)
}

/// The service that runs PostgreSQL: the one service not built from the checkout whose
/// image is named postgres (or postgis), else the one such service whose environment has
/// the official image's `POSTGRES_*` variables (app services often share that `.env`, so
/// the variables alone do not tell).
pub fn database_service(services: &BTreeMap<String, ServiceDef>) -> Result<String, String> {
    let pulled = || services.iter().filter(|(_, d)| !d.built);
    let by_image: Vec<&String> = pulled()
        .filter(|(_, d)| {
            let image = d.image.rsplit('/').next().unwrap_or_default();
            image.starts_with("postgres") || image.starts_with("postgis")
        })
        .map(|(n, _)| n)
        .collect();
    let by_env: Vec<&String> = pulled()
        .filter(|(_, d)| {
            ["POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"]
                .iter()
                .any(|k| d.environment.contains_key(*k))
        })
        .map(|(n, _)| n)
        .collect();
    match (by_image.as_slice(), by_env.as_slice()) {
        ([one], _) | ([], [one]) => Ok((*one).clone()),
        ([], []) => Err("no service of the compose project looks like PostgreSQL (no postgres image, no POSTGRES_* variable outside the built services)".into()),
        (many, _) if many.len() > 1 => Err(format!("several services look like PostgreSQL: {}", names(many))),
        (_, many) => Err(format!("several services look like PostgreSQL: {}", names(many))),
    }
}

/// Fills in, from `compose config` (`config`, its JSON or why it could not be read) and the
/// running stack, what the config leaves unset: `backup.db.service`, `.user`, `.database`,
/// `.writers` and `deploy.migrate.service`. What cannot be told goes to `t.unknown` with the
/// reason.
pub async fn stack_facts(
    remote: &Remote,
    t: &mut Target,
    config: Result<&[u8], Error>,
    stack: &Stack,
) -> Result<(), Error> {
    let config = match config {
        Ok(json) => json,
        Err(e) => {
            let why = format!(
                "`compose config` failed on {}: {}",
                remote.host(),
                e.message
            );
            for key in KEYS {
                t.unknown.insert(key, why.clone());
            }
            return Ok(());
        }
    };
    let services = parse_services(config)?;
    check_named_services(t, &services, remote.host())?;
    fill_stack_facts(remote, t, &services, stack).await
}

/// What [`stack_facts`] does once the config's service names are checked (`doctor` reports
/// a wrong name as one row and goes on discovering the rest).
pub async fn fill_stack_facts(
    remote: &Remote,
    t: &mut Target,
    services: &BTreeMap<String, ServiceDef>,
    stack: &Stack,
) -> Result<(), Error> {
    let migrate_service = t.deploy.migrate.as_ref().and_then(|m| m.service.clone());
    let db_service = match t.backup.db.service.clone() {
        Some(s) => Ok(s),
        None => database_service(services),
    };
    match &db_service {
        Ok(service) => {
            t.backup.db.service = Some(service.clone());
            let env = services.get(service).map(|d| &d.environment);
            // The official image's variables; unset, the fact stays unknown.
            let mut from_env = |key: &'static str, var: &str, value: &mut Option<String>| {
                if value.is_none() {
                    *value = env
                        .and_then(|e| e.get(var))
                        .filter(|v| !v.is_empty())
                        .cloned();
                    if value.is_none() {
                        t.unknown
                            .insert(key, format!("service `{service}` sets no {var}"));
                    }
                }
            };
            let (mut user, mut database) = (t.backup.db.user.take(), t.backup.db.database.take());
            from_env("backup.db.user", "POSTGRES_USER", &mut user);
            from_env("backup.db.database", "POSTGRES_DB", &mut database);
            (t.backup.db.user, t.backup.db.database) = (user, database);
            if t.backup.db.writers.is_none() {
                // Every service running now but the database: what a restore must stop.
                let writers: Vec<String> = stack
                    .services()
                    .into_iter()
                    .filter(|s| s != service && stack.service(s).any(|c| c.running()))
                    .collect();
                t.backup.db.writers = Some(writers);
            }
        }
        Err(why) => {
            for key in [
                "backup.db.service",
                "backup.db.user",
                "backup.db.database",
                "backup.db.writers",
            ] {
                t.unknown.insert(key, why.clone());
            }
        }
    }

    if migrate_service.is_none() {
        match migrate_service_of(remote, services, stack).await? {
            Ok(service) => {
                t.deploy
                    .migrate
                    .get_or_insert_with(Default::default)
                    .service = Some(service)
            }
            Err(why) => {
                t.unknown.insert("deploy.migrate.service", why);
            }
        }
    }
    Ok(())
}

/// Every service the config names must be one of the project's: a typo (or the sandbox's
/// `api` on a host whose API is `web`) is found before the first change, not half-way.
fn check_named_services(
    t: &Target,
    services: &BTreeMap<String, ServiceDef>,
    host: &str,
) -> Result<(), Error> {
    let missing = missing_services(t, services);
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::usage(format!(
        "the config names services the compose project on {host} does not have: {}",
        missing.join(", ")
    ))
    .with_help(format!(
        "the project's services are: {}; fix the config (nothing was changed)",
        services.keys().cloned().collect::<Vec<_>>().join(", ")
    )))
}

/// The services the config names that the project does not have, as "`web` (in `key`)".
pub fn missing_services(t: &Target, services: &BTreeMap<String, ServiceDef>) -> Vec<String> {
    let mut named: Vec<(String, &String)> = Vec::new();
    let db = &t.backup.db;
    named.extend(
        db.service
            .iter()
            .map(|s| ("backup.db.service".to_string(), s)),
    );
    named.extend(
        db.writers
            .iter()
            .flatten()
            .map(|s| ("backup.db.writers".to_string(), s)),
    );
    if let Some(m) = &t.deploy.migrate {
        named.extend(
            m.service
                .iter()
                .map(|s| ("deploy.migrate.service".to_string(), s)),
        );
    }
    for (name, check) in &t.checks {
        named.extend(
            check
                .service
                .iter()
                .map(|s| (format!("checks.{name}.service"), s)),
        );
    }
    for (name, secret) in &t.secrets {
        named.extend(
            secret
                .restart
                .iter()
                .map(|s| (format!("secrets.{name}.restart"), s)),
        );
    }
    named
        .iter()
        .filter(|(_, s)| !services.contains_key(s.as_str()))
        .map(|(key, s)| format!("`{s}` (in `{key}`)"))
        .collect()
}

const KEYS: [&str; 5] = [
    "backup.db.service",
    "backup.db.user",
    "backup.db.database",
    "backup.db.writers",
    "deploy.migrate.service",
];

/// The service whose image runs `alembic`: the one built service, or among several the one
/// whose running container has an `alembic.ini` in its working directory (where
/// `compose run SERVICE alembic` looks for it).
async fn migrate_service_of(
    remote: &Remote,
    services: &BTreeMap<String, ServiceDef>,
    stack: &Stack,
) -> Result<Result<String, String>, Error> {
    let built: Vec<&String> = services
        .iter()
        .filter(|(_, d)| d.built)
        .map(|(n, _)| n)
        .collect();
    match built.as_slice() {
        [] => {
            return Ok(Err(
                "the compose project builds no service to run migrations in".into(),
            ))
        }
        [one] => return Ok(Ok((*one).clone())),
        _ => {}
    }
    let mut args = Vec::new();
    for service in &built {
        match stack.service(service).find(|c| c.running()) {
            Some(c) => args.extend([service.to_string(), c.id.clone()]),
            None => {
                return Ok(Err(format!(
                    "several services are built ({}) and `{service}` is not running to be asked which holds alembic.ini",
                    names(&built)
                )))
            }
        }
    }
    let out = remote
        .run_ok(&RemoteCommand::sh(HAS_ALEMBIC_INI_SH, args).read_only())
        .await?;
    let with_ini: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
    Ok(match with_ini.as_slice() {
        [one] => Ok(one.clone()),
        // The same build (context, Dockerfile, target) makes the same image: any of them runs
        // the same alembic, so the first by name is as good as the others.
        [first, rest @ ..]
            if rest
                .iter()
                .all(|s| services[s].build == services[first].build) =>
        {
            Ok(first.clone())
        }
        [] => Err(format!(
            "none of the built services ({}) has an alembic.ini in its working directory",
            names(&built)
        )),
        many => Err(format!(
            "several services have an alembic.ini: {}",
            many.join(", ")
        )),
    })
}

fn names(list: &[&String]) -> String {
    list.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(reference: &str) -> &str {
    reference.get(..12).unwrap_or(reference)
}

/// A client's error output as one line (psql says what failed on its first line and why on
/// the next), at most 300 characters.
pub fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// The database's alembic revision now: `Ok(None)` when it has no `alembic_version` table
/// (or an empty one), `Err` (unknown, with the reason) when the query fails in any other
/// way: a wrong port, a custom version table, a missing permission.
pub async fn db_revision(remote: &Remote, t: &Target) -> Result<Option<String>, String> {
    let db = &t.backup.db;
    let (service, user, database) = match (
        t.fact("backup.db.service", &db.service),
        t.fact("backup.db.user", &db.user),
        t.fact("backup.db.database", &db.database),
    ) {
        (Ok(s), Ok(u), Ok(d)) => (s, u, d),
        (s, u, d) => {
            let err = [s.err(), u.err(), d.err()].into_iter().flatten().next();
            return Err(err.map(|e| e.message).unwrap_or_default());
        }
    };
    let argv: Vec<String> = [
        "psql",
        "-U",
        user,
        "-d",
        database,
        "-tAc",
        "SELECT version_num FROM alembic_version",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = remote
        .run(&exec_in_service(t, service, &argv).read_only())
        .await
        .map_err(|e| e.message)?;
    let stderr = out.stderr_text();
    match out.status {
        0 => Ok(Some(out.stdout_text().trim().to_string()).filter(|r| !r.is_empty())),
        _ if stderr.contains("relation \"alembic_version\" does not exist") => Ok(None),
        status => Err(format!(
            "reading the revision from `alembic_version` in database `{database}` (service `{service}`, user `{user}`) failed (exit {status}): {}; \
             check `backup.db.service`, `backup.db.user`, `backup.db.database` and where PostgreSQL listens (`backup.db.host`, `backup.db.port`)",
            one_line(&stderr)
        )),
    }
}

/// The folders to read a release's revisions from (`TAG_ini`/`TAG_inil` lines of the
/// probe), or what the release's head is without reading any.
pub fn locate(
    override_dir: Option<&str>,
    fields: &BTreeMap<String, Vec<String>>,
    tag: &str,
) -> Result<Vec<String>, Head> {
    if let Some(dir) = override_dir.filter(|d| !d.is_empty()) {
        return Ok(vec![dir.trim_end_matches('/').to_string()]);
    }
    let inis = fields
        .get(&format!("{tag}_ini"))
        .cloned()
        .unwrap_or_default();
    match inis.as_slice() {
        [] => Err(Head::Absent),
        [ini] => {
            let prefix = format!("{ini}\t");
            let text: String = fields
                .get(&format!("{tag}_inil"))
                .into_iter()
                .flatten()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|l| format!("{l}\n"))
                .collect();
            versions_dirs(ini, &text)
                .map_err(|e| Head::Unknown(format!("{e}; set `deploy.migrate.versions`")))
        }
        many => Err(Head::Unknown(format!(
            "several alembic.ini files ({}); set `deploy.migrate.versions` to the scripts' folder",
            many.join(", ")
        ))),
    }
}

/// Reads the revision scripts of `dirs` at `reference`: the head and the graph.
pub async fn head_at(
    remote: &Remote,
    t: &Target,
    reference: &str,
    dirs: Result<Vec<String>, Head>,
) -> Result<(Head, Graph), Error> {
    let dirs = match dirs {
        Ok(dirs) => dirs,
        Err(head) => return Ok((head, Graph::default())),
    };
    let mut args = vec![t.dir.clone(), reference.to_string()];
    args.extend(dirs.iter().cloned());
    let cmd = RemoteCommand::sh(&format!("{MIGRATIONS_SH}\n{REVISIONS_SH}"), args)
        .read_only()
        .timeout(t.timeouts.command());
    let out = remote.run_ok(&cmd).await?;
    let fields = tab_fields(&out.stdout_text());
    let existing = fields.get("rel_dir").cloned().unwrap_or_default();
    if existing.is_empty() {
        return Ok((
            Head::Unknown(format!(
                "the migration scripts' folder {} does not exist at {}; set `deploy.migrate.versions`",
                dirs.join(", "),
                short(reference)
            )),
            Graph::default(),
        ));
    }
    let graph = Graph::parse_grep(
        &fields
            .get("rel_mig")
            .map(|v| v.join("\n"))
            .unwrap_or_default(),
    );
    let head = match graph.head() {
        Ok(h) => Head::Known(h),
        Err(e) => Head::Unknown(format!(
            "{e} at {}: merge the heads (alembic merge) first",
            short(reference)
        )),
    };
    Ok((head, graph))
}

/// The head of the code checked out on the host now (what `restore db` compares a
/// backup's revision with).
pub async fn checked_out_head(remote: &Remote, t: &Target) -> Result<Head, Error> {
    let override_dir = t.deploy.migrate.as_ref().and_then(|m| m.versions.clone());
    let mut fields = BTreeMap::new();
    if override_dir.is_none() {
        let script = format!("{MIGRATIONS_SH}\ncd \"$1\" || exit 1\nalembic_inis HEAD cur");
        let out = remote
            .run_ok(&RemoteCommand::sh(&script, [t.dir.as_str()]).read_only())
            .await?;
        fields = tab_fields(&out.stdout_text());
    }
    let dirs = locate(override_dir.as_deref(), &fields, "cur");
    Ok(head_at(remote, t, "HEAD", dirs).await?.0)
}

/// The database the application's URL for `role` names (its path), else `fallback`.
pub fn app_database_name(
    entries: &[(String, String)],
    role: &str,
    fallback: Option<&str>,
) -> Option<String> {
    entries
        .iter()
        .filter_map(|(_, v)| url::Url::parse(v.trim()).ok())
        .find(|u| u.scheme().starts_with("postgres") && u.username() == role)
        .map(|u| u.path().trim_start_matches('/').to_string())
        .filter(|d| !d.is_empty())
        .or_else(|| fallback.map(str::to_string))
}

/// Where the application connects to PostgreSQL as `role`: the host and port of the first
/// database URL in `.env` (`postgresql://`, `postgres://`, `postgresql+driver://`) whose user
/// is `role`. Rotate proves a new password over this path: a check over 127.0.0.1 inside the
/// database's container proves nothing where pg_hba trusts loopback (the official image).
pub fn app_database_address(
    entries: &[(String, String)],
    role: &str,
) -> Option<(String, Option<u16>)> {
    entries.iter().find_map(|(_, value)| {
        let url = url::Url::parse(value.trim()).ok()?;
        if !url.scheme().starts_with("postgres") {
            return None;
        }
        let user: String = url::form_urlencoded::parse(format!("u={}", url.username()).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
        if user != role {
            return None;
        }
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(a) => a.to_string(),
            url::Host::Ipv6(a) => a.to_string(),
        };
        Some((host, url.port()))
    })
}

/// `key<TAB>value` lines, grouped by key (values in order).
pub fn tab_fields(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('\t') {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(json: &str) -> BTreeMap<String, ServiceDef> {
        parse_services(json.as_bytes()).unwrap()
    }

    #[test]
    fn the_database_service_is_the_one_that_looks_like_postgres() {
        let s = services(
            r#"{"services":{
            "web":{"build":{"context":"."},"environment":{"DATABASE_URL":"postgresql://u:p@[::1]:25432/calmdb"}},
            "db":{"image":"127.0.0.1:15000/calmtrader/postgres:15","environment":{"POSTGRES_USER":"calmadmin","POSTGRES_DB":"calmdb"}},
            "cache":{"image":"redis:7"}}}"#,
        );
        assert_eq!(database_service(&s).unwrap(), "db");
        assert_eq!(s["db"].environment["POSTGRES_USER"], "calmadmin");
        assert!(s["web"].built && !s["db"].built);
    }

    #[test]
    fn no_or_several_postgres_services_are_unknown() {
        let none = services(r#"{"services":{"web":{"image":"app"}}}"#);
        assert!(database_service(&none).unwrap_err().contains("no service"));
        let two = services(
            r#"{"services":{"a":{"image":"postgres:16"},"b":{"image":"bitnami/postgresql:16"}}}"#,
        );
        assert!(database_service(&two).unwrap_err().contains("a, b"));
        let by_env = services(
            r#"{"services":{"x":{"image":"pg","environment":{"POSTGRES_USER":"u"}},"y":{"image":"pg2","environment":{"POSTGRES_DB":"d"}}}}"#,
        );
        assert!(database_service(&by_env).unwrap_err().contains("x, y"));
    }

    #[test]
    fn app_services_sharing_the_env_file_are_not_the_database() {
        let s = services(
            r#"{"services":{
            "api":{"build":{"context":".."},"environment":{"POSTGRES_USER":"trader","POSTGRES_DB":"trader_psy"}},
            "bot":{"build":{"context":".."},"environment":{"POSTGRES_USER":"trader"}},
            "store":{"image":"127.0.0.1:15000/calm/pg:15","environment":{"POSTGRES_USER":"trader"}}}}"#,
        );
        assert_eq!(database_service(&s).unwrap(), "store");
    }

    #[test]
    fn a_service_the_project_does_not_have_is_refused_naming_the_key() {
        let text = "[targets.t]\nssh = \"h\"\n[backup.db]\nwriters = [\"api\", \"web\"]\n[secrets]\nTOKEN = { restart = [\"bot\"] }\n";
        let t = crate::config::parse(text, "c.toml".as_ref(), ".".as_ref(), None)
            .unwrap()
            .target;
        let s = services(r#"{"services":{"web":{"build":{}},"db":{"image":"postgres"}}}"#);
        let err = check_named_services(&t, &s, "h").unwrap_err();
        assert!(
            err.message.contains("`api` (in `backup.db.writers`)"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("`bot` (in `secrets.TOKEN.restart`)"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("`web`"), "{}", err.message);
    }

    #[test]
    fn the_applications_own_path_to_the_database_comes_from_its_url() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let host_network = env(&[
            ("REDIS_URL", "redis://127.0.0.1:26379/0"),
            (
                "DATABASE_URL",
                "postgresql+psycopg2://calm:s3cr%40t@[::1]:25432/calmdb",
            ),
        ]);
        assert_eq!(
            app_database_address(&host_network, "calm"),
            Some(("::1".to_string(), Some(25432)))
        );
        // The bridge-network shape: the service's name, resolved by Docker's DNS.
        let bridge = env(&[(
            "DATABASE_URL",
            "postgres://trader:pw@postgres:5432/trader_psy",
        )]);
        assert_eq!(
            app_database_address(&bridge, "trader"),
            Some(("postgres".to_string(), Some(5432)))
        );
        assert_eq!(app_database_address(&bridge, "someone_else"), None);
        let encoded_user = env(&[("DB", "postgresql://app%2Buser:x@db/app")]);
        assert_eq!(
            app_database_address(&encoded_user, "app+user"),
            Some(("db".to_string(), None))
        );
        assert_eq!(
            app_database_address(&env(&[("X", "not a url")]), "calm"),
            None
        );
    }

    #[test]
    fn a_release_without_alembic_ini_is_absent_and_two_are_unknown() {
        let fields = tab_fields("cur_ini\tbackend/alembic.ini\ncur_inil\tbackend/alembic.ini\t[alembic]\ncur_inil\tbackend/alembic.ini\tscript_location = db/migrations\ntgt_ini\ta/alembic.ini\ntgt_ini\tb/alembic.ini\n");
        assert_eq!(
            locate(None, &fields, "cur").unwrap(),
            ["backend/db/migrations/versions"]
        );
        assert!(
            matches!(locate(None, &fields, "tgt"), Err(Head::Unknown(m)) if m.contains("deploy.migrate.versions"))
        );
        assert_eq!(locate(None, &BTreeMap::new(), "cur"), Err(Head::Absent));
        assert_eq!(
            locate(Some("x/versions/"), &fields, "tgt").unwrap(),
            ["x/versions"]
        );
    }
}
