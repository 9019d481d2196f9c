//! The backup catalogue: what a backup is (its manifest and name), where backups are (on the
//! host, in `local_dir`), and the commands that make them. `backup`, `restore`, `health`,
//! `env`, `doctor` and the deploy engine all read it; none of them owns it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod local;

use crate::cli::BackupFormat;
use crate::compose::working_dir;
use crate::config::Target;
use crate::error::Error;
use crate::remote::{Remote, RemoteCommand};

/// `dir workdir service user database format label flock count_sql [fault]`: dump, flush,
/// rename, manifest last.
///
/// `flock` is the host's operations lock file, taken shared (backups may overlap each other,
/// never a deploy or restore runner, which holds it exclusively); the kernel drops it when
/// the script dies, however it dies. Empty when the caller (a runner) holds it already.
/// `fault` (a test hook, from `CTOPS_FAULT`) names a point where the script SIGKILLs its own
/// process group, as a crash or an OOM kill would.
const DB_BACKUP: &str = include_str!("../scripts/backup-db.sh");

/// Every table's rows and the alembic revision, run inside the dump's snapshot (one line per
/// table: `table NAME COUNT`, then `revision REV`, then `end`, without which the counts are
/// not trusted). Dynamic SQL through `query_to_xml`, so
/// it is one plain statement that works without creating a function.
const COUNT_ROWS: &str = "SELECT 'table', format('%I.%I', table_schema, table_name), \
(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text \
FROM information_schema.tables \
WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 2; \
SELECT 'revision', (xpath('/row/v/text()', query_to_xml('SELECT version_num AS v FROM alembic_version LIMIT 1', false, true, '')))[1]::text \
WHERE to_regclass('alembic_version') IS NOT NULL; \
SELECT 'end';";

/// A backup's manifest, as written on the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub kind: String,
    pub name: String,
    pub format: String,
    pub sha256: String,
    pub size: u64,
    pub created: String,
    pub database: String,
    pub revision: Option<String>,
    #[serde(default)]
    pub label: String,
    pub tables: std::collections::BTreeMap<String, u64>,
}

impl Manifest {
    /// What makes this manifest unusable, if anything: read from the host, it is checked
    /// before its name reaches a path or a command, and a backup without a real checksum is
    /// no backup.
    pub fn problem(&self) -> Option<String> {
        if self.name == "latest"
            || !self.name.starts_with("db-")
            || validate_name(&self.name).is_err()
        {
            return Some("its name is not a backup name".into());
        }
        if !is_sha256(&self.sha256) {
            return Some("it has no valid sha256".into());
        }
        if !matches!(self.format.as_str(), "custom" | "sql") {
            return Some("its format is neither custom nor sql".into());
        }
        None
    }
}

/// 64 lowercase hex digits, as `openssl dgst -r` and `sha256sum` print them.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A table as the manifest names it, `schema.table`, each part a bare lowercase identifier
/// or a double-quoted one (`format('%I.%I')`); anything else never reaches SQL.
pub fn is_qualified_table(s: &str) -> bool {
    fn ident(s: &str) -> Option<&str> {
        if let Some(rest) = s.strip_prefix('"') {
            let mut chars = rest.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if rest[i + 1..].starts_with('"') {
                        chars.next();
                    } else {
                        return (i > 0).then(|| &rest[i + 1..]);
                    }
                }
            }
            return None;
        }
        let end = s
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        let first = s.chars().next()?;
        (end > 0 && (first.is_ascii_lowercase() || first == '_')).then(|| &s[end..])
    }
    ident(s)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(ident)
        .is_some_and(str::is_empty)
}

/// The host file that serialises runners (exclusive) against backups (shared).
pub fn ops_flock(t: &Target) -> String {
    format!("{}/ops.flock", t.state_dir.trim_end_matches('/'))
}

/// The backup command for the target's database (also the deploy runner's pre-migration
/// backup, so both make the same kind of backup). `in_runner`: the caller holds the
/// operations lock already.
pub fn db_backup_command(
    t: &Target,
    format: BackupFormat,
    label: &str,
    in_runner: bool,
) -> Result<RemoteCommand, Error> {
    let db = &t.backup.db;
    let format = match format {
        BackupFormat::Custom => "custom",
        BackupFormat::Sql => "sql",
    };
    Ok(RemoteCommand::sh(
        &with_db_address(t, DB_BACKUP),
        [
            t.backup_dir.clone(),
            working_dir(t),
            t.fact("backup.db.service", &db.service)?.to_string(),
            t.fact("backup.db.user", &db.user)?.to_string(),
            t.fact("backup.db.database", &db.database)?.to_string(),
            format.to_string(),
            label.to_string(),
            if in_runner {
                String::new()
            } else {
                ops_flock(t)
            },
            COUNT_ROWS.to_string(),
            crate::fault::requested(),
        ],
    )
    .timeout(
        t.timeouts
            .backup
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(7200)),
    )
    .stop_on_disconnect())
}

const DUMP_SIZE: &str = include_str!("../scripts/dump-size.sh");

/// Runs `work` (a database dump on the host) with `bar` showing the bytes written so far,
/// asked every half second through the same connection (the host's `.tmp-*` dump files in
/// backup_dir). Nothing is asked when the bar is not drawn.
pub async fn with_dump_progress<T>(
    remote: &Remote,
    t: &Target,
    bar: &crate::output::Spinner,
    work: impl std::future::Future<Output = T>,
) -> T {
    if !bar.is_shown() {
        return work.await;
    }
    let poll = async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if let Some(bytes) = dumped_bytes(remote, t).await {
                bar.set_position(bytes);
            }
        }
    };
    tokio::select! {
        done = work => done,
        _ = poll => unreachable!("polling never ends on its own"),
    }
}

/// The bytes the dumps running in backup_dir have written so far; `None` when the host
/// could not say (a missed reading only holds a bar still).
pub async fn dumped_bytes(remote: &Remote, t: &Target) -> Option<u64> {
    let size = RemoteCommand::sh(DUMP_SIZE, [t.backup_dir.as_str()]).read_only();
    let out = remote.run(&size).await.ok()?;
    out.stdout_text().trim().parse().ok()
}

/// `DB_HOST=…`/`DB_PORT=…` above a script that runs clients in the database's container
/// (its `db_exec` passes them as PGHOST/PGPORT), when `[backup.db]` sets them.
pub fn with_db_address(t: &Target, script: &str) -> String {
    let db = &t.backup.db;
    let mut text = String::new();
    if let Some(host) = &db.host {
        text.push_str(&format!("{}\n", crate::remote::assign("DB_HOST", host)));
    }
    if let Some(port) = db.port {
        text.push_str(&format!(
            "{}\n",
            crate::remote::assign("DB_PORT", &port.to_string())
        ));
    }
    text + script
}

/// `dir env_file`: a copy of `.env` (mode 0600) when it differs from the newest copy. `ln`
/// refuses a name that exists, so a second copy in the same second is `env-STAMP-02` (sorted
/// after the first) and never replaces it: `restore env` copies the current file before it
/// reads the one it restores.
const ENV_BACKUP: &str = include_str!("../scripts/backup-env.sh");

pub fn env_backup_command(t: &Target) -> RemoteCommand {
    let env = format!("{}/{}", t.dir.trim_end_matches('/'), t.env_file);
    RemoteCommand::sh(ENV_BACKUP, [t.backup_dir.clone(), env])
}

/// One backup in `backup list` (and what `backup db|env` made).
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub kind: String,
    pub name: String,
    pub place: String,
    pub size: u64,
    pub created: String,
    pub sha256: Option<String>,
    pub verified: bool,
    /// `runbook` for a dump runbook 5.2's own command made (no manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub made_by: Option<&'static str>,
}

impl Listed {
    /// Database backups only (the listing reads `db-*.manifest.json`); text from the host is
    /// shown with control characters escaped, so a manifest cannot drive the terminal.
    pub fn from_manifest(m: &Manifest, place: &str, verified: bool) -> Self {
        Listed {
            kind: "db".into(),
            name: printable(&m.name),
            place: place.into(),
            size: m.size,
            created: printable(&m.created),
            sha256: Some(printable(&m.sha256)),
            // A manifest ctops cannot trust is never shown as verified.
            verified: verified && m.problem().is_none(),
            made_by: None,
        }
    }
}

pub use crate::report::printable;

/// Which backups the policy removes: older than `keep_days` by the host's clock, never the
/// newest one (whatever its age).
pub fn to_prune(backups: &[Manifest], keep_days: u32, now: i64) -> Vec<Manifest> {
    let age_limit = i64::from(keep_days) * 86_400;
    let created = |m: &Manifest| crate::compose::epoch_of(&m.created).unwrap_or(i64::MAX);
    let newest = backups
        .iter()
        .max_by_key(|m| created(m))
        .map(|m| m.name.clone());
    backups
        .iter()
        .filter(|m| Some(&m.name) != newest.as_ref() && now - created(m) > age_limit)
        .cloned()
        .collect()
}

/// `dir`: the host's clock, then each database backup's manifest (one line; a dump without
/// one never counts) with a `verified` line when `backup verify` passed, then the `.env`
/// copies.
pub const LIST: &str = include_str!("../scripts/backup-list.sh");

/// The host's clock (UTC seconds) and the database backups on the host, one round trip.
pub async fn host_db_backups(remote: &Remote, dir: &str) -> Result<(i64, Vec<Manifest>), Error> {
    let text = remote
        .run_ok(&RemoteCommand::sh(LIST, [dir]).read_only())
        .await?
        .stdout_text();
    let mut lines = text.lines();
    let now = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    // Only sound manifests count: their names go into paths and commands, and one without
    // a real checksum is no backup.
    let manifests = lines
        .filter_map(|l| serde_json::from_str::<Manifest>(l).ok())
        .filter(|m| m.problem().is_none())
        .collect();
    Ok((now, manifests))
}

/// `dir name`: the manifest of NAME (or of the newest backup for `latest`), then the sha256
/// of the file as it is now.
const INSPECT: &str = include_str!("../scripts/restore-inspect.sh");

/// Reads a backup's manifest and the checksum of its file now.
pub async fn inspect(
    remote: &Remote,
    backup_dir: &str,
    name: &str,
) -> Result<(Manifest, String), Error> {
    let out = remote
        .run(&RemoteCommand::sh(INSPECT, [backup_dir, name]).read_only())
        .await?;
    if out.status == 66 {
        return Err(
            Error::usage(out.stderr_text().trim().to_string()).with_help("see `ctops backup list`")
        );
    }
    if out.status != 0 {
        return Err(remote.exited(
            &RemoteCommand::sh(INSPECT, [backup_dir, name]),
            out.status,
            &out.stderr,
        ));
    }
    let text = out.stdout_text();
    let mut lines = text.lines();
    // Host data: a manifest ctops cannot read refuses the command (exit 4), as one with an
    // invalid field does; nothing was changed.
    let first = lines.next().unwrap_or_default();
    let manifest: Manifest = serde_json::from_str(first)
        .map_err(|e| {
            let field = bad_field(first)
                .map(|f| format!("`{f}` is missing or of the wrong type ({e})"))
                .unwrap_or_else(|| e.to_string());
            Error::refused(format!(
                "the manifest of backup {name} on {} is unreadable: {field}; nothing was changed",
                remote.host()
            ))
            .with_help("the manifest was changed by hand or is damaged: restore another backup (`ctops backup list`)")
        })?;
    // Its name becomes file names, the lock's command and the runner's describe.
    if !manifest_name_ok(&manifest.name, name) {
        return Err(invalid_manifest(
            name,
            remote.host(),
            "name",
            &manifest.name,
        ));
    }
    Ok((
        manifest,
        lines.next().unwrap_or_default().trim().to_string(),
    ))
}

/// A manifest's own name: a backup name, and the one asked for (any, for `latest`).
fn manifest_name_ok(found: &str, asked: &str) -> bool {
    found != "latest" && validate_name(found).is_ok() && (asked == "latest" || found == asked)
}

pub fn invalid_manifest(asked: &str, host: &str, what: &str, value: &str) -> Error {
    Error::refused(format!(
        "the manifest of backup {asked} on {host} has an invalid {what}: {value:?}; nothing was changed"
    ))
    .with_help("the manifest was changed by hand or is damaged: restore another backup (`ctops backup list`)")
}

/// A backup name (`db-...`, or `env-...` for `.env` copies) or `latest`: plain file names only.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = name == "latest"
        || ((name.starts_with("db-") || name.starts_with("env-"))
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("invalid backup name {name:?}"))
            .with_help("see `ctops backup list`"))
    }
}

/// `dir name`: the path of env backup NAME (or the newest for `latest`).
pub const FIND_ENV: &str = include_str!("../scripts/restore-find-env.sh");

/// Runs a lookup by backup name (such as [`FIND_ENV`]): its exit 66, no such backup, is a
/// usage error that says so (exit 2, as an unknown ref is); anything else as `run_ok`.
pub async fn run_lookup(
    remote: &Remote,
    cmd: &RemoteCommand,
) -> Result<crate::remote::Captured, Error> {
    let out = remote.run(cmd).await?;
    match out.status {
        0 => Ok(out),
        66 => {
            Err(Error::usage(out.stderr_text().trim().to_string())
                .with_help("see `ctops backup list`"))
        }
        status => Err(remote.exited(cmd, status, &out.stderr)),
    }
}

/// The manifest field that is missing or of the wrong type, for a message that names it
/// (serde_json's says only "invalid type: integer `12`, expected a string").
fn bad_field(text: &str) -> Option<&'static str> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let text_field = |v: Option<&serde_json::Value>| v.is_some_and(serde_json::Value::is_string);
    let fields: [(&'static str, bool); 10] = [
        ("kind", text_field(doc.get("kind"))),
        ("name", text_field(doc.get("name"))),
        ("format", text_field(doc.get("format"))),
        ("sha256", text_field(doc.get("sha256"))),
        (
            "size",
            doc.get("size").is_some_and(serde_json::Value::is_u64),
        ),
        ("created", text_field(doc.get("created"))),
        ("database", text_field(doc.get("database"))),
        (
            "revision",
            doc.get("revision")
                .is_none_or(|v| v.is_null() || v.is_string()),
        ),
        (
            "label",
            doc.get("label").is_none_or(serde_json::Value::is_string),
        ),
        (
            "tables",
            doc.get("tables")
                .and_then(serde_json::Value::as_object)
                .is_some_and(|t| t.values().all(serde_json::Value::is_u64)),
        ),
    ];
    fields.iter().find(|(_, ok)| !ok).map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy script run here, with a `date` that always says the same second.
    #[test]
    fn two_env_copies_in_one_second_keep_both() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let date = bin.join("date");
        std::fs::write(&date, "#!/bin/sh\necho 20261127T063001Z\n").unwrap();
        std::fs::set_permissions(&date, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let backups = dir.path().join("backups");
        let env = dir.path().join(".env");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let copy = |content: &str| {
            std::fs::write(&env, content).unwrap();
            let out = std::process::Command::new("sh")
                .args(["-c", ENV_BACKUP, "ctops"])
                .arg(&backups)
                .arg(&env)
                .env("PATH", &path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        };
        for content in ["A=1\n", "A=2\n", "A=3\n"] {
            copy(content);
        }
        let mut names: Vec<String> = std::fs::read_dir(backups.join("env"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "env-20261127T063001Z",
                "env-20261127T063001Z-02",
                "env-20261127T063001Z-03"
            ]
        );
        let newest = std::fs::read_to_string(backups.join("env").join(&names[2])).unwrap();
        assert_eq!(newest, "A=3\n");
        let first = std::fs::read_to_string(backups.join("env").join(&names[0])).unwrap();
        assert_eq!(first, "A=1\n", "the first copy was replaced");
    }

    fn manifest(name: &str, created: &str) -> Manifest {
        Manifest {
            kind: "db".into(),
            name: name.into(),
            format: "custom".into(),
            sha256: String::new(),
            size: 1,
            created: created.into(),
            database: "d".into(),
            revision: None,
            label: String::new(),
            tables: Default::default(),
        }
    }

    #[test]
    fn retention_keeps_recent_backups_and_always_the_newest() {
        let now = crate::compose::epoch_of("2026-11-26T12:00:00Z").unwrap();
        let backups: Vec<Manifest> = (0..10)
            .map(|d| {
                manifest(
                    &format!("db-{d}"),
                    &format!("2026-11-{:02}T11:00:00Z", 26 - d),
                )
            })
            .collect();
        let gone: Vec<String> = to_prune(&backups, 7, now)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(gone, ["db-7", "db-8", "db-9"]);
        let gone = to_prune(&backups, 0, now);
        assert_eq!(gone.len(), 9, "the newest survives any policy");
        assert!(!gone.iter().any(|m| m.name == "db-0"));
    }

    #[test]
    fn only_a_full_checksum_and_a_plain_name_make_a_sound_manifest() {
        let sha = "a".repeat(64);
        let with = |name: &str, sha256: &str| Manifest {
            sha256: sha256.into(),
            ..manifest(name, "2026-11-26T11:00:00Z")
        };
        assert_eq!(with("db-20261126T110000Z.dump", &sha).problem(), None);
        for (name, sha256) in [
            ("db-20261126T110000Z.dump", ""),
            ("db-20261126T110000Z.dump", "abc"),
            ("db-20261126T110000Z.dump", &"A".repeat(64)),
            ("db-20261126T110000Z.dump", &"é".repeat(32)),
            ("db-../../etc/passwd", sha.as_str()),
            ("latest", sha.as_str()),
            ("env-20261126T110000Z", sha.as_str()),
        ] {
            assert!(with(name, sha256).problem().is_some(), "{name} {sha256}");
        }
    }

    #[test]
    fn only_quoted_or_plain_table_names_reach_sql() {
        for ok in ["public.users", r#"public."Odd ""name"".x""#, "s_1.t$2"] {
            assert!(is_qualified_table(ok), "{ok}");
        }
        for bad in [
            "users",
            "public.users; DROP TABLE users",
            "public.\"open",
            "public.\"\"",
            "Public.users",
            "public.users.x",
            "",
        ] {
            assert!(!is_qualified_table(bad), "{bad}");
        }
    }

    #[test]
    fn host_text_cannot_drive_the_terminal() {
        assert_eq!(printable("db-x\u{1b}[2J\n"), "db-x\\u{1b}[2J\\n");
        assert_eq!(printable("db-ünï.dump"), "db-ünï.dump");
    }

    #[test]
    fn manifests_parse() {
        let m: Manifest = serde_json::from_str(r#"{"kind":"db","name":"db-20261126T200000Z.dump","format":"custom","sha256":"ab","size":10,"created":"2026-11-26T20:00:00Z","database":"trader_psy","revision":"0002","label":"","tables":{"public.users":3}}"#).unwrap();
        assert_eq!(m.tables["public.users"], 3);
        assert_eq!(m.revision.as_deref(), Some("0002"));
    }

    /// Found with the corpus (`manifest/name-number.json`, `size-negative.json`): the
    /// refusal said "invalid type: integer `12`, expected a string", naming no field.
    #[test]
    fn an_unreadable_manifest_names_the_field() {
        let sound = r#"{"kind":"db","name":"db-1.dump","format":"custom","sha256":"ab","size":1,"created":"x","database":"d","revision":null,"tables":{"public.t":1}}"#;
        assert_eq!(bad_field(sound), None);
        for (from, to, field) in [
            (r#""name":"db-1.dump""#, r#""name":12"#, "name"),
            (r#""size":1"#, r#""size":-1"#, "size"),
            (r#""size":1"#, r#""size":"big""#, "size"),
            (r#","tables":{"public.t":1}"#, "", "tables"),
            (r#""revision":null"#, r#""revision":2"#, "revision"),
        ] {
            assert_eq!(bad_field(&sound.replace(from, to)), Some(field), "{to}");
        }
    }

    #[test]
    fn names_and_identifiers_are_safe() {
        validate_name("latest").unwrap();
        validate_name("db-20261126T200000Z.dump").unwrap();
        assert!(validate_name("../etc/passwd").is_err());
        assert!(validate_name("db-$(id)").is_err());
        validate_name("env-20261126T200000Z").unwrap();
        assert!(validate_name("env-../../x").is_err());
        assert!(validate_name("env-a/b").is_err());
        assert!(manifest_name_ok("db-1.dump", "latest"));
        assert!(manifest_name_ok("db-1.dump", "db-1.dump"));
        assert!(!manifest_name_ok("db-2.dump", "db-1.dump"));
        assert!(!manifest_name_ok("db-x\ntouch /tmp/p", "latest"));
        assert!(!manifest_name_ok("latest", "latest"));
    }
}

/// Property tests of the manifest parser: JSON from the host in any shape is parsed or
/// refused without a panic, and only a sound manifest's name reaches a path or a command.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A field's JSON: sound, hostile, of the wrong type, or missing (`None`).
    fn field(sound: &'static str) -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            3 => Just(Some(sound.to_string())),
            1 => Just(None),
            1 => Just(Some("null".to_string())),
            1 => Just(Some("12".to_string())),
            1 => Just(Some("-1".to_string())),
            2 => prop_oneof![
                Just("../../etc/passwd"),
                Just("db-../../etc/passwd"),
                Just("db-x\ntouch /tmp/p"),
                Just("db-x\u{0}.dump"),
                Just("db-$(id).dump"),
                Just("latest"),
                Just("db-\u{1b}[2J.dump"),
                Just("custom"),
                Just("SQL"),
            ]
            .prop_map(|s| Some(serde_json::to_string(s).unwrap())),
            1 => any::<String>().prop_map(|s| Some(serde_json::to_string(&s).unwrap())),
        ]
    }

    fn manifest_json() -> impl Strategy<Value = String> {
        let sha = "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"";
        (
            field("\"db\""),
            field("\"db-20261126T200000Z.dump\""),
            field("\"custom\""),
            prop_oneof![field(sha), Just(Some(sha.to_uppercase()))],
            field("10"),
            field("\"2026-11-26T20:00:00Z\""),
            field("\"trader_psy\""),
            field("\"0002\""),
            field("{\"public.users\": 3}"),
        )
            .prop_map(
                |(kind, name, format, sha256, size, created, database, revision, tables)| {
                    let fields = [
                        ("kind", kind),
                        ("name", name),
                        ("format", format),
                        ("sha256", sha256),
                        ("size", size),
                        ("created", created),
                        ("database", database),
                        ("revision", revision),
                        ("tables", tables),
                    ];
                    let body: Vec<String> = fields
                        .iter()
                        .filter_map(|(k, v)| v.as_ref().map(|v| format!("\"{k}\":{v}")))
                        .collect();
                    format!("{{{}}}", body.join(","))
                },
            )
    }

    proptest! {
        #[test]
        fn only_a_sound_manifest_passes(json in manifest_json()) {
            if let Ok(m) = serde_json::from_str::<Manifest>(&json) {
                if m.problem().is_none() {
                    prop_assert!(m.name.starts_with("db-") && !m.name.contains(['/', '\n', '\0']), "{}", m.name);
                    prop_assert!(validate_name(&m.name).is_ok());
                    prop_assert!(is_sha256(&m.sha256));
                    prop_assert!(m.format == "custom" || m.format == "sql");
                }
                // Whatever it holds, a listing shows it on one line without escapes.
                let listed = Listed::from_manifest(&m, "host", true);
                for text in [&listed.name, &listed.created] {
                    prop_assert!(!text.chars().any(char::is_control), "{text:?}");
                }
                prop_assert!(!listed.verified || m.problem().is_none());
            }
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in any::<String>()) {
            if let Ok(m) = serde_json::from_str::<Manifest>(&text) {
                let _ = m.problem();
            }
            let _ = is_qualified_table(&text);
        }
    }
}
