//! The compose layer: typed builders for the compose verbs the runbook uses, and the state
//! of the stack read in a form that survives compose versions.
//!
//! `compose ps --format json` is an array before 2.21, NDJSON after, and absent in v1, so
//! state comes from `docker inspect` of the containers labelled by compose instead. Every
//! compose command gets an explicit `-p PROJECT` once the project is known: a different
//! project name silently starts a second stack with new, empty volumes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Target;
use crate::error::Error;
use crate::remote::{Remote, RemoteCommand};

/// Builds compose commands for one target.
#[derive(Debug, Clone)]
pub struct Compose {
    program: Vec<String>,
    dir: String,
    file: String,
    project: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub follow: bool,
    pub tail: Option<u64>,
    pub since: Option<String>,
    /// Prefix each line with its service (useful with several services).
    pub prefix: bool,
}

impl Compose {
    pub fn new(target: &Target, project: Option<String>) -> Self {
        Compose {
            program: target.compose.clone(),
            dir: target.dir.clone(),
            file: target.compose_file.clone(),
            project,
        }
    }

    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// `compose -f FILE [-p PROJECT] ARGS...`, run from the checkout.
    fn command<I, S>(&self, args: I) -> RemoteCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = self.program.clone();
        argv.extend(["-f".to_string(), self.file.clone()]);
        if let Some(project) = &self.project {
            argv.extend(["-p".to_string(), project.clone()]);
        }
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        // `compose restart bot`: its words, options aside.
        let words = args
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with('-'));
        let name = std::iter::once("compose").chain(words);
        let name: Vec<&str> = name.collect();
        argv.extend(args.iter().cloned());
        RemoteCommand::new(argv).in_dir(&self.dir).named(name)
    }

    pub fn ps(&self) -> RemoteCommand {
        self.command(["ps", "--all"]).read_only()
    }

    /// The resolved project: its name and services (compose v2).
    pub fn config_json(&self) -> RemoteCommand {
        self.command(["config", "--format", "json"]).read_only()
    }

    pub fn build(&self, services: &[String]) -> RemoteCommand {
        self.command(with(["build"], services)).stop_on_disconnect()
    }

    /// `build --pull`: the built services on the newest of their base images.
    pub fn build_pulling(&self) -> RemoteCommand {
        self.command(["build", "--pull"]).stop_on_disconnect()
    }

    pub fn up(&self, services: &[String], no_deps: bool, build: bool) -> RemoteCommand {
        let mut args = vec!["up", "-d"];
        if no_deps {
            args.push("--no-deps");
        }
        if build {
            args.push("--build");
        }
        self.command(with(args, services))
    }

    /// A one-off container of the service's image, removed afterwards.
    pub fn run_rm(&self, service: &str, argv: &[String]) -> RemoteCommand {
        let mut args = vec![
            "run".to_string(),
            "--rm".into(),
            "-T".into(),
            "--no-deps".into(),
            service.into(),
        ];
        args.extend(argv.iter().cloned());
        self.command(args).stop_on_disconnect()
    }

    pub fn down(&self) -> RemoteCommand {
        self.command(["down"])
    }

    pub fn stop(&self, services: &[String]) -> RemoteCommand {
        self.command(with(["stop"], services))
    }

    pub fn start(&self, services: &[String]) -> RemoteCommand {
        self.command(with(["start"], services))
    }

    pub fn restart(&self, services: &[String]) -> RemoteCommand {
        self.command(with(["restart"], services))
    }

    pub fn pull(&self, ignore_buildable: bool) -> RemoteCommand {
        let args = if ignore_buildable {
            vec!["pull", "--ignore-buildable"]
        } else {
            vec!["pull"]
        };
        self.command(args)
    }

    /// `exec -T`: no TTY, which would corrupt binary output such as dumps.
    pub fn exec(&self, service: &str, argv: &[String]) -> RemoteCommand {
        let mut args = vec!["exec".to_string(), "-T".into(), service.into()];
        args.extend(argv.iter().cloned());
        self.command(args)
    }

    /// `compose exec` with a terminal (no `-T`), for a session over `ssh -tt`.
    pub fn exec_tty(&self, service: &str, argv: &[String]) -> RemoteCommand {
        let mut args = vec!["exec".to_string(), service.into()];
        args.extend(argv.iter().cloned());
        self.command(args)
    }

    pub fn logs(&self, services: &[String], opts: &LogsOptions) -> RemoteCommand {
        let mut args = vec!["logs".to_string(), "--no-color".into()];
        if !opts.prefix {
            args.push("--no-log-prefix".into());
        }
        if let Some(n) = opts.tail {
            args.extend(["--tail".into(), n.to_string()]);
        }
        if let Some(since) = &opts.since {
            args.extend(["--since".into(), since.clone()]);
        }
        if opts.follow {
            args.push("--follow".into());
        }
        args.extend(services.iter().cloned());
        self.command(args).read_only().stop_on_disconnect()
    }
}

fn with<'a, I>(args: I, services: &[String]) -> Vec<String>
where
    I: IntoIterator<Item = &'a str>,
{
    args.into_iter()
        .map(str::to_string)
        .chain(services.iter().cloned())
        .collect()
}

/// Checks a service name before it goes anywhere near the host. Compose allows letters,
/// digits, `_`, `.` and `-`, starting with a letter or digit.
pub fn validate_service_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(Error::usage(format!("invalid service name {name:?}"))
            .with_help("service names are letters, digits, `_`, `.` and `-`; see `ctops status`"))
    }
}

/// One container of the stack, as `docker inspect` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub service: String,
    pub project: String,
    #[serde(skip)]
    pub working_dir: String,
    #[serde(skip)]
    pub config_files: String,
    pub state: String,
    pub health: Option<String>,
    pub restarts: u64,
    pub oom_killed: bool,
    pub exit_code: i64,
    pub started_at: String,
    pub image: String,
    pub image_id: String,
}

impl Container {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    name: String,
    image: String,
    #[serde(default)]
    restart_count: u64,
    state: InspectState,
    config: InspectConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    status: String,
    #[serde(default, rename = "OOMKilled")]
    oom_killed: bool,
    #[serde(default)]
    exit_code: i64,
    #[serde(default)]
    started_at: String,
    health: Option<InspectHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHealth {
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    image: String,
    #[serde(default)]
    labels: Option<std::collections::HashMap<String, String>>,
}

/// Parses `docker inspect` output of any number of containers.
pub fn parse_inspect(json: &[u8]) -> Result<Vec<Container>, serde_json::Error> {
    let raw: Vec<Inspect> = serde_json::from_slice(json)?;
    Ok(raw
        .into_iter()
        .map(|c| {
            let labels = c.config.labels.unwrap_or_default();
            let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
            Container {
                id: c.id,
                name: c.name.trim_start_matches('/').to_string(),
                service: label("com.docker.compose.service"),
                project: label("com.docker.compose.project"),
                working_dir: label("com.docker.compose.project.working_dir"),
                config_files: label("com.docker.compose.project.config_files"),
                state: c.state.status,
                health: c.state.health.map(|h| h.status),
                restarts: c.restart_count,
                oom_killed: c.state.oom_killed,
                exit_code: c.state.exit_code,
                started_at: c.state.started_at,
                image: c.config.image,
                image_id: c.image,
            }
        })
        .collect())
}

/// Every compose-managed container on the host, plus the host's clock (UTC seconds), in one
/// round trip. The filter by checkout happens here, not on the host.
const INSPECT_SCRIPT: &str = include_str!("scripts/stack-inspect.sh");

/// The stack of one checkout as it runs now.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The compose project the running containers belong to (None: nothing runs yet).
    pub project: Option<String>,
    pub containers: Vec<Container>,
    /// The host's clock when the state was read, in seconds since the epoch (UTC).
    pub host_time: i64,
}

impl Stack {
    /// Reads the stack's state and settles the project name (refusing a mismatch).
    pub async fn load(remote: &Remote, target: &Target) -> Result<Stack, Error> {
        let cmd = RemoteCommand::sh(INSPECT_SCRIPT, Vec::<String>::new()).read_only();
        let out = remote.run_ok(&cmd).await?;
        let text = out.stdout_text();
        let (clock, json) = text.split_once('\n').unwrap_or((&text, "[]"));
        let host_time = clock.trim().parse().unwrap_or(0);
        let all = parse_inspect(json.as_bytes()).map_err(|e| {
            Error::failed(format!(
                "cannot read `docker inspect` output from {}: {e}",
                remote.host()
            ))
        })?;
        let mine: Vec<Container> = all.into_iter().filter(|c| belongs_to(c, target)).collect();
        let project = settle_project(&mine, target)?;
        let containers = mine
            .into_iter()
            .filter(|c| Some(&c.project) == project.as_ref())
            .collect();
        Ok(Stack {
            project,
            containers,
            host_time,
        })
    }

    pub fn compose(&self, target: &Target) -> Compose {
        Compose::new(
            target,
            self.project
                .clone()
                .or_else(|| target.compose_project.clone()),
        )
    }

    /// The containers of one service (several when scaled).
    pub fn service<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Container> + 'a {
        self.containers.iter().filter(move |c| c.service == name)
    }

    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.containers.iter().map(|c| c.service.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The compose file's absolute path on the host.
fn compose_path(target: &Target) -> String {
    format!(
        "{}/{}",
        target.dir.trim_end_matches('/'),
        target.compose_file
    )
}

/// What compose records as the project's working dir: the compose file's folder.
pub fn working_dir(target: &Target) -> String {
    let file = compose_path(target);
    file.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

/// A container belongs to this target when compose started it from this checkout's file.
fn belongs_to(c: &Container, target: &Target) -> bool {
    let file = compose_path(target);
    c.config_files.split(',').any(|f| same_path(f, &file))
        || same_path(&c.working_dir, &working_dir(target))
}

/// Finds the service's running container by compose's labels and runs a command in it, in
/// one round trip that needs no earlier state read (`docker exec` on a container id is also
/// cheaper than `compose exec`, which parses the whole project first).
/// `$3` is `-i` to pass stdin through, `-` not to.
const EXEC_IN_SERVICE: &str = r#"id=$(docker ps -q --filter "label=com.docker.compose.project.working_dir=$1" --filter "label=com.docker.compose.service=$2" | head -n 1)
if [ -z "$id" ]; then echo "service $2 has no running container" >&2; exit 125; fi
stdin=$3; shift 3
if [ "$stdin" = -i ]; then exec docker exec -i "$id" "$@"; else exec docker exec "$id" "$@"; fi"#;

/// `argv` in a running container of `service` (no TTY, like `compose exec -T`).
pub fn exec_in_service(target: &Target, service: &str, argv: &[String]) -> RemoteCommand {
    exec_in_service_with(target, service, argv, false)
}

/// As [`exec_in_service`], with the command's stdin passed through (data and secrets go in
/// this way, never on a command line).
pub fn exec_in_service_stdin(target: &Target, service: &str, argv: &[String]) -> RemoteCommand {
    exec_in_service_with(target, service, argv, true)
}

fn exec_in_service_with(
    target: &Target,
    service: &str,
    argv: &[String],
    stdin: bool,
) -> RemoteCommand {
    let mut args = vec![
        working_dir(target),
        service.to_string(),
        if stdin { "-i" } else { "-" }.to_string(),
    ];
    args.extend(database_address(target, service));
    args.extend(argv.iter().cloned());
    RemoteCommand::sh(EXEC_IN_SERVICE, args)
}

/// `env PGHOST=… PGPORT=…` before every client ctops runs in the database's service, when
/// `[backup.db]` says where PostgreSQL listens (the container's own environment otherwise).
fn database_address(target: &Target, service: &str) -> Vec<String> {
    let db = &target.backup.db;
    if db.service.as_deref() != Some(service) || (db.host.is_none() && db.port.is_none()) {
        return Vec::new();
    }
    let mut words = vec!["env".to_string()];
    words.extend(db.host.iter().map(|h| format!("PGHOST={h}")));
    words.extend(db.port.iter().map(|p| format!("PGPORT={p}")));
    words
}

fn same_path(a: &str, b: &str) -> bool {
    let norm = |p: &str| p.trim_end_matches('/').replace("/./", "/");
    !a.is_empty() && norm(a) == norm(b)
}

/// The project the running containers use; refuses when it differs from the configured one
/// or when two projects run from the same file.
fn settle_project(containers: &[Container], target: &Target) -> Result<Option<String>, Error> {
    let mut running: Vec<&str> = containers.iter().map(|c| c.project.as_str()).collect();
    running.sort();
    running.dedup();
    match (running.as_slice(), target.compose_project.as_deref()) {
        ([], configured) => Ok(configured.map(str::to_string)),
        ([one], None) => Ok(Some(one.to_string())),
        ([one], Some(configured)) if *one == configured => Ok(Some(one.to_string())),
        ([one], Some(configured)) => Err(Error::refused(format!(
            "the containers of `{}` on {} run as compose project `{one}`, but the config says `{configured}`",
            target.compose_file, target.ssh
        ))
        .with_help("a different project name would start a second stack with new, empty volumes; fix `compose_project` (or leave it empty to use the running one)")),
        (many, _) => Err(Error::refused(format!(
            "the containers of `{}` on {} belong to several compose projects: {}",
            target.compose_file,
            target.ssh,
            many.join(", ")
        ))
        .with_help("set `compose_project` to the one ctops must manage, and remove the others")),
    }
}

/// Parses a Docker/RFC 3339 timestamp into epoch seconds (None for Docker's zero time).
pub fn epoch_of(timestamp: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(timestamp.get(..19)?).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    (secs > 0).then_some(secs)
}

/// "3h 2m" for how long a container has been up.
pub fn uptime(started_at: &str, now: i64) -> Option<String> {
    let started = epoch_of(started_at)?;
    let secs = (now - started).max(0) as u64;
    let rounded = if secs >= 3600 { secs - secs % 60 } else { secs };
    Some(humantime::format_duration(Duration::from_secs(rounded)).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(project: Option<&str>) -> Target {
        let text = format!(
            "[targets.t]\nssh = \"h\"\ndir = \"/srv/a b\"\n{}",
            project
                .map(|p| format!("compose_project = \"{p}\"\n"))
                .unwrap_or_default()
        );
        crate::config::parse(&text, "c.toml".as_ref(), ".".as_ref(), None)
            .unwrap()
            .target
    }

    /// Messages and spinners name a compose call by its words, not by the compose file the
    /// options name first; the name survives the lock's wrapper.
    #[test]
    fn compose_calls_are_named_by_their_words() {
        let compose = Compose::new(&target(Some("calm")), Some("calm".into()));
        assert_eq!(
            compose.restart(&["bot".into()]).label(),
            "compose restart bot"
        );
        assert_eq!(
            compose.up(&["api".into()], true, true).label(),
            "compose up api"
        );
        let wrapped = compose.down().wrapped(&["timeout".into(), "300".into()]);
        assert_eq!(wrapped.label(), "compose down");
    }

    /// The inspection script with a `docker` stub whose `inspect` answers `inspect`.
    fn inspect_with(inspect: &str) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let stub = dir.path().join("docker");
        std::fs::write(
            &stub,
            format!("#!/bin/sh\ncase \"$1\" in\nps) printf 'aaa\\nbbb\\n' ;;\ninspect) {inspect} ;;\nesac\n"),
        )
        .unwrap();
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(INSPECT_SCRIPT)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    #[test]
    fn a_container_removed_between_listing_and_inspection_is_left_out() {
        let out = inspect_with(
            "echo '[{\"Id\":\"aaa\"}]'; echo 'Error: No such object: bbb' >&2; exit 1",
        );
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("[{\"Id\":\"aaa\"}]\n"));
        let down = inspect_with("echo 'Cannot connect to the Docker daemon' >&2; exit 1");
        assert_eq!(down.status.code(), Some(1), "{down:?}");
        assert!(String::from_utf8_lossy(&down.stderr).contains("Cannot connect"));
    }

    #[test]
    fn clients_in_the_database_service_get_the_configured_address() {
        let mut t = target(None);
        let argv = ["psql".to_string()];
        let plain = exec_in_service(&t, "db", &argv).render();
        assert!(!plain.contains("PGHOST"), "{plain}");
        t.backup.db.service = Some("db".into());
        t.backup.db.host = Some("::1".into());
        t.backup.db.port = Some(25432);
        let rendered = exec_in_service(&t, "db", &argv).render();
        assert!(
            rendered.ends_with(" db - env 'PGHOST=::1' PGPORT=25432 psql"),
            "{rendered}"
        );
        let other = exec_in_service(&t, "web", &argv).render();
        assert!(!other.contains("PGHOST"), "{other}");
    }

    const INSPECT: &str = r#"[{"Id":"abc","Name":"/infrastructure-redis-1","Image":"sha256:1","RestartCount":2,
      "State":{"Status":"running","OOMKilled":false,"ExitCode":0,"StartedAt":"2026-11-26T20:00:00.123Z"},
      "Config":{"Image":"sandbox-base","Labels":{"com.docker.compose.service":"redis","com.docker.compose.project":"infrastructure",
      "com.docker.compose.project.working_dir":"/srv/a b/infrastructure",
      "com.docker.compose.project.config_files":"/srv/a b/infrastructure/docker-compose.yml"}}}]"#;

    #[test]
    fn inspect_output_is_parsed() {
        let c = &parse_inspect(INSPECT.as_bytes()).unwrap()[0];
        assert_eq!(
            (c.service.as_str(), c.project.as_str(), c.restarts),
            ("redis", "infrastructure", 2)
        );
        assert!(c.running());
        assert!(belongs_to(c, &target(None)));
    }

    #[test]
    fn project_mismatch_is_refused() {
        let cs = parse_inspect(INSPECT.as_bytes()).unwrap();
        assert_eq!(
            settle_project(&cs, &target(None)).unwrap().as_deref(),
            Some("infrastructure")
        );
        assert_eq!(
            settle_project(&cs, &target(Some("infrastructure")))
                .unwrap()
                .as_deref(),
            Some("infrastructure")
        );
        let err = settle_project(&cs, &target(Some("trader"))).unwrap_err();
        assert_eq!(err.exit, crate::error::Exit::Refused);
    }

    #[test]
    fn commands_carry_file_project_and_dir() {
        let c = Compose::new(&target(None), Some("infrastructure".into()));
        assert_eq!(
            c.ps().render(),
            "cd '/srv/a b' && docker compose -f infrastructure/docker-compose.yml -p infrastructure ps --all"
        );
        let logs = c.logs(
            &["bot".into()],
            &LogsOptions {
                tail: Some(5),
                follow: true,
                ..Default::default()
            },
        );
        assert!(logs
            .render()
            .contains("logs --no-color --no-log-prefix --tail 5 --follow bot"));
        assert!(c
            .exec("postgres", &["pg_isready".into()])
            .render()
            .ends_with("exec -T postgres pg_isready"));
    }

    #[test]
    fn service_names_are_validated() {
        for ok in ["api", "bot-2", "a_b.c"] {
            validate_service_name(ok).unwrap();
        }
        for bad in [
            "$(touch /tmp/ctops-pwned)",
            "a;b",
            "`id`",
            "a\nb",
            "",
            "-f",
            "a b",
        ] {
            assert!(validate_service_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uptime_is_computed_from_the_host_clock() {
        let now = epoch_of("2026-11-26T21:02:30Z").unwrap();
        assert_eq!(uptime("2026-11-26T20:00:00.123Z", now).unwrap(), "1h 2m");
        assert_eq!(uptime("0001-01-01T00:00:00Z", now), None);
    }
}
