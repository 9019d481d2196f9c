//! The secret sweep (issue 14): every command that can run against the sandbox, at `-vvv`,
//! with and without `--json`, while `.env`'s values change (`env set`, `env unset`,
//! `rotate`, `restore env`); then no value any `.env` held during the run (plain, URL-encoded,
//! or as a SCRAM verifier) may appear in any place a secret could land: the commands'
//! stdout and stderr, the audit log, the journals, step logs and scripts left on the host
//! (under `state_dir` and `/tmp`), the argv of every process on the host (sampled every
//! 20 ms while the commands run: this machine is the sandbox host), PostgreSQL's log with
//! `log_statement = all`, and `pg_stat_activity` (sampled the same way).
//!
//! `env get KEY` and `exec` are left out: they print what was asked for (SPEC principle 4).
//! A failure names the place and the secret's key, never the value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;

use crate::util::*;

const STATE_DIR: &str = "/srv/ctops sandbox/state";
const BACKUPS: &str = "/srv/ctops sandbox/backups";
const ROLE: &str = "trader";
/// How often the argv and `pg_stat_activity` samplers look.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

fn env_path() -> String {
    format!("{CHECKOUT}/infrastructure/.env")
}

// ------------------------------------------------------------------ what is looked for

/// Every secret the sweep knows, in every form it looks for: the text, and what to call it
/// in a failure (the key and the form, never the value).
#[derive(Default)]
struct Secrets {
    needles: BTreeMap<String, String>,
    /// The clear values, to check any SCRAM verifier found against them.
    values: BTreeMap<String, String>,
    /// Text that is public (the config, the compose file): a value found in it is not a secret.
    public: String,
}

/// Values shorter than this are settings (`normal`, `trader`), not secrets.
const MIN_SECRET_LEN: usize = 8;

fn url_encoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl Secrets {
    fn add(&mut self, key: &str, value: &str) {
        if value.chars().count() < MIN_SECRET_LEN || self.public.contains(value) {
            return;
        }
        self.values
            .entry(value.to_string())
            .or_insert_with(|| key.to_string());
        let form = url_encoded(value);
        let forms = [
            (value.to_string(), "plain"),
            (form.replace('+', "%20"), "URL-encoded"),
            (form, "form-encoded"),
        ];
        for (text, how) in forms {
            self.needles
                .entry(text)
                .or_insert_with(|| format!("{key} ({how})"));
        }
        // A URL's password is a secret of its own (a DATABASE_URL's is the role's password).
        if let Some(password) = url::Url::parse(value)
            .ok()
            .and_then(|u| u.password().map(str::to_string))
        {
            let decoded = url::form_urlencoded::parse(format!("p={password}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            self.add(&format!("{key}'s password"), &decoded);
        }
    }

    /// Every value of an `.env` text.
    fn add_env(&mut self, text: &str) {
        for (key, value) in ctops::envfile::EnvFile::parse(text).entries() {
            self.add(&key, &value);
        }
    }

    fn add_verifier(&mut self, key: &str, verifier: &str) {
        self.needles
            .entry(verifier.to_string())
            .or_insert_with(|| format!("{key} (SCRAM verifier in pg_authid)"));
    }

    /// What of `haystack` is a secret: the names of the secrets found in it.
    fn found_in(&self, haystack: &str) -> BTreeSet<String> {
        let mut found: BTreeSet<String> = self
            .needles
            .iter()
            .filter(|(text, _)| haystack.contains(text.as_str()))
            .map(|(_, label)| label.clone())
            .collect();
        // Any SCRAM verifier (whatever its salt) of a value any .env held.
        for verifier in scram_verifiers(haystack) {
            for (value, key) in &self.values {
                if verifies(&verifier, value) {
                    found.insert(format!("{key} (as a SCRAM verifier)"));
                }
            }
        }
        found
    }

    /// `text` with every secret replaced by its name: safe to print in a failure.
    fn redact(&self, text: &str) -> String {
        let mut by_length: Vec<(&String, &String)> = self.needles.iter().collect();
        by_length.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        let mut out = text.to_string();
        for (needle, label) in by_length {
            out = out.replace(needle.as_str(), &format!("[{label}]"));
        }
        // Verifiers of other salts: shown by their prefix only.
        for verifier in scram_verifiers(&out.clone()) {
            out = out.replace(&verifier, "[a SCRAM verifier]");
        }
        out
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` strings in `text`.
fn scram_verifiers(text: &str) -> Vec<String> {
    const PREFIX: &str = "SCRAM-SHA-256$";
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+/=:$".contains(c);
    text.match_indices(PREFIX)
        .map(|(at, _)| {
            let rest = &text[at + PREFIX.len()..];
            let end = rest.find(|c| !allowed(c)).unwrap_or(rest.len());
            format!("{PREFIX}{}", &rest[..end])
        })
        .collect()
}

/// Whether `verifier` is `password`'s (recomputed with its salt).
fn verifies(verifier: &str, password: &str) -> bool {
    let salt = verifier
        .split('$')
        .nth(1)
        .and_then(|s| s.split_once(':'))
        .and_then(|(_, salt)| base64::engine::general_purpose::STANDARD.decode(salt).ok());
    match salt {
        Some(salt) => ctops::scram::verifier_with_salt(password, &salt) == verifier,
        None => false,
    }
}

/// Places and what was found there: `(place, text)`.
type Haystacks = Vec<(String, String)>;

fn leaks(secrets: &Secrets, haystacks: &Haystacks) -> Vec<String> {
    let mut found = BTreeSet::new();
    for (place, text) in haystacks {
        for label in secrets.found_in(text) {
            let place: String = secrets.redact(place).chars().take(300).collect();
            found.insert(format!("{label} in {place}"));
        }
    }
    found.into_iter().collect()
}

// ------------------------------------------------------------------ witnesses on the host

/// The sandbox's running postgres container, if one runs.
fn pg_container() -> Option<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            "label=com.docker.compose.service=postgres",
            "--filter",
            &format!("label=com.docker.compose.project.working_dir={CHECKOUT}/infrastructure"),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

/// psql as the superuser in the postgres container, SQL on stdin (nothing on its argv).
fn psql_in_container(sql: &str) -> Option<String> {
    let id = pg_container()?;
    let mut child = Command::new("docker")
        .args([
            "exec", "-i", &id, "psql", "-X", "-q", "-At", "-U", ROLE, "-d",
        ])
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(sql.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The role's verifier as PostgreSQL keeps it.
fn role_verifier() -> String {
    let out = psql_in_container(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{ROLE}';\n"
    ))
    .expect("read pg_authid");
    let verifier = out.trim().to_string();
    assert!(
        verifier.starts_with("SCRAM-SHA-256$"),
        "role {ROLE}'s password is not SCRAM"
    );
    verifier
}

/// What the samplers saw while the commands ran.
#[derive(Default)]
struct Seen {
    /// Distinct argv (words joined by spaces) of processes on the host, outside containers'
    /// main processes and the local ctops itself.
    argv: BTreeSet<String>,
    /// Distinct `query` texts of `pg_stat_activity`.
    queries: BTreeSet<String>,
    /// How many times `pg_stat_activity` was read.
    activity_samples: usize,
    /// PostgreSQL's log (every container the run saw), from the start of the sweep.
    server_log: String,
}

/// The background samplers and the PostgreSQL logging they need; dropping it stops them
/// and turns `log_statement` off again, however the test ends.
struct Witnesses {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The pid of the running `docker logs -f`, to end it.
    follower: Arc<Mutex<Option<u32>>>,
    since: String,
}

impl Witnesses {
    fn start() -> Self {
        psql_in_container("ALTER SYSTEM SET log_statement = 'all';\nSELECT pg_reload_conf();\n")
            .expect("log_statement = all");
        let since = host("date -u +%Y-%m-%dT%H:%M:%S.%NZ").trim().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let follower = Arc::new(Mutex::new(None));
        let threads = vec![
            spawn_argv_sampler(stop.clone(), seen.clone()),
            spawn_activity_sampler(stop.clone(), seen.clone()),
            spawn_log_follower(stop.clone(), seen.clone(), follower.clone(), since.clone()),
        ];
        Witnesses {
            stop,
            seen,
            threads,
            follower,
            since,
        }
    }

    /// Stops the samplers and returns what they saw, with the server log read to the end.
    fn finish(&mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        // The follower blocks in `docker logs -f`: end it (a process this test started),
        // again should it have started another just before it saw the flag.
        for _ in 0..100 {
            if self.threads.iter().all(|t| t.is_finished()) {
                break;
            }
            if let Some(pid) = *self.follower.lock().unwrap() {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap());
        if let Some(id) = pg_container() {
            seen.server_log
                .push_str(&docker_logs(&id, &self.since, false).0);
        }
        seen
    }
}

impl Drop for Witnesses {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.finish();
        }
        psql_in_container("ALTER SYSTEM RESET log_statement;\nSELECT pg_reload_conf();\n");
    }
}

/// Every process's argv, every [`SAMPLE_EVERY`], as in `ps`; a new argv is classified when
/// first seen (its process may be gone by the end).
fn spawn_argv_sampler(
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let ctops = env!("CARGO_BIN_EXE_ctops");
        let mut classified: BTreeSet<String> = BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                if raw.is_empty() {
                    continue;
                }
                let argv = String::from_utf8_lossy(&raw)
                    .trim_end_matches('\0')
                    .replace('\0', " ");
                if !classified.insert(argv.clone()) {
                    continue;
                }
                // The operator's own ctops (its argv is what the operator typed: `env set
                // KEY=VALUE`), and the containers' main processes, which compose starts as
                // the compose file says (the sandbox's object store takes its keys on its
                // command line): not processes ctops runs on the host.
                let first = raw.split(|b| *b == 0).next().unwrap_or_default();
                if first == ctops.as_bytes() || container_main_process(&entry.path()) {
                    continue;
                }
                seen.lock().unwrap().argv.insert(argv);
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    })
}

/// Whether the process is PID 1 of a PID namespace below the host's (a container's main).
fn container_main_process(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:").map(str::to_string))
        })
        .map(|ns| {
            let ids: Vec<&str> = ns.split_whitespace().collect();
            ids.len() > 1 && ids.last() == Some(&"1")
        })
        .unwrap_or(false)
}

/// `pg_stat_activity` every [`SAMPLE_EVERY`] through one psql session, opened again in the
/// new container when postgres is recreated.
fn spawn_activity_sampler(
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> std::thread::JoinHandle<()> {
    const QUERY: &str = "SELECT coalesce(string_agg(translate(query, E'\\n\\r', '  '), E'\\x1f'), '') || '<end>' FROM pg_stat_activity WHERE pid <> pg_backend_pid();\n";
    std::thread::spawn(move || {
        let mut session: Option<(std::process::Child, BufReader<std::process::ChildStdout>)> = None;
        while !stop.load(Ordering::Relaxed) {
            if session.is_none() {
                session = pg_container().and_then(|id| {
                    let mut child = Command::new("docker")
                        .args(["exec", "-i", &id, "psql", "-X", "-q", "-At", "-U", ROLE])
                        .args(["-d", "postgres"])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .ok()?;
                    // The sampler's own statements stay out of the log the sweep reads.
                    child
                        .stdin
                        .as_mut()?
                        .write_all(b"SET log_statement = 'none';\n")
                        .ok()?;
                    let out = BufReader::new(child.stdout.take()?);
                    Some((child, out))
                });
                if session.is_none() {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
            let (child, out) = session.as_mut().unwrap();
            let mut line = String::new();
            let ok = child
                .stdin
                .as_mut()
                .map(|i| i.write_all(QUERY.as_bytes()).and_then(|_| i.flush()))
                .is_some_and(|r| r.is_ok())
                && out.read_line(&mut line).map(|n| n > 0).unwrap_or(false);
            if ok {
                let mut seen = seen.lock().unwrap();
                seen.activity_samples += 1;
                for q in line.trim_end().trim_end_matches("<end>").split('\x1f') {
                    if !q.is_empty() {
                        seen.queries.insert(q.to_string());
                    }
                }
            } else {
                let (mut child, _) = session.take().unwrap();
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        if let Some((mut child, _)) = session {
            let _ = child.kill();
            let _ = child.wait();
        }
    })
}

/// `docker logs [-f] --since SINCE ID` (stdout and stderr: postgres logs to stderr).
fn docker_logs(id: &str, since: &str, follow: bool) -> (String, Option<std::process::Child>) {
    let mut cmd = Command::new("docker");
    cmd.arg("logs");
    if follow {
        cmd.arg("-f");
    }
    cmd.args(["--since", since, id]);
    if !follow {
        let out = cmd.output().map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text
        });
        return (out.unwrap_or_default(), None);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok();
    (String::new(), child)
}

/// Follows the postgres container's log; when postgres is recreated (a `restore env`
/// recreates every service that reads `.env`), follows the new container from the start.
fn spawn_log_follower(
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    follower: Arc<Mutex<Option<u32>>>,
    since: String,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(id) = pg_container() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let (_, child) = docker_logs(&id, &since, true);
            let Some(mut child) = child else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            *follower.lock().unwrap() = Some(child.id());
            let mut text = Vec::new();
            let _ = child.stderr.take().unwrap().read_to_end(&mut text);
            let _ = child.wait();
            *follower.lock().unwrap() = None;
            seen.lock()
                .unwrap()
                .server_log
                .push_str(&String::from_utf8_lossy(&text));
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// The text of every file under `dir` (recursively) that `keep` accepts: `(path, text)`.
fn files_under(dir: &Path, keep: &dyn Fn(&Path, &std::fs::Metadata) -> bool) -> Haystacks {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_under(&path, keep));
        } else if meta.is_file() && meta.len() < 8 << 20 && keep(&path, &meta) {
            if let Ok(bytes) = std::fs::read(&path) {
                found.push((
                    path.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    found
}

/// What a file under `state_dir` is, for a failure message.
fn state_file_place(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let what = match name {
        "audit.jsonl" => "the audit log",
        "journal" => "a journal",
        "script.sh" => "a runner script",
        n if n.ends_with(".log") => "a step log",
        _ => "a file in state_dir",
    };
    format!("{what} ({path})")
}

// ------------------------------------------------------------------ the commands

struct Ran {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// The sweep's run: its config, its commands' outputs, the secrets seen so far.
struct Sweep {
    config: PathBuf,
    dir: tempfile::TempDir,
    ran: Vec<Ran>,
    secrets: Secrets,
    /// `EDITOR` for `env edit`.
    editor: Option<PathBuf>,
}

impl Sweep {
    /// Runs ctops at `-vvv` with ctops's own tracing at its most detailed; `stdin` is piped
    /// in (a rotated value never goes on a command line).
    fn run(&mut self, args: &[&str], stdin: Option<&str>, expect: &[i32]) -> &Ran {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctops"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .env("CTOPS_CONFIG", &self.config)
            .env("CTOPS_LOG", "ctops=trace")
            .current_dir(home.path())
            .envs(self.editor.iter().map(|e| ("EDITOR", e)))
            .arg("-vvv")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("run ctops");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let ran = Ran {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        };
        self.learn();
        eprintln!(
            "sweep: ctops -vvv {} -> {} in {:.1?}",
            self.secrets.redact(&ran.args.join(" ")),
            ran.code,
            ran.elapsed
        );
        if !expect.contains(&ran.code) {
            // Whatever it printed, shown with every known secret replaced by its name.
            panic!(
                "ctops {} exited {} (expected {expect:?})\n--- stdout\n{}\n--- stderr\n{}",
                self.secrets.redact(&ran.args.join(" ")),
                ran.code,
                self.secrets.redact(&ran.stdout),
                self.secrets.redact(&ran.stderr)
            );
        }
        self.ran.push(ran);
        self.ran.last().unwrap()
    }

    /// Runs `args` twice: as they are and with `--json`.
    fn both(&mut self, args: &[&str], expect: &[i32]) {
        self.run(args, None, expect);
        let mut json = args.to_vec();
        json.push("--json");
        self.run(&json, None, expect);
    }

    /// Every value the host's `.env` and its kept copies hold now.
    fn learn(&mut self) {
        if let Ok(text) = std::fs::read_to_string(env_path()) {
            self.secrets.add_env(&text);
        }
        for (_, text) in files_under(&Path::new(BACKUPS).join("env"), &|_, _| true) {
            self.secrets.add_env(&text);
        }
    }

    /// The name of the newest `.env` copy (`env-...`).
    fn newest_env_copy(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(Path::new(BACKUPS).join("env"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("env-"))
            .collect();
        names.sort();
        names.pop().expect("an env copy")
    }
}

/// A random alphanumeric string.
fn random(n: usize) -> String {
    ctops::scram::generate(n)
}

/// A local clone of the fixture's origin at `commit`, as the engineer's checkout.
fn local_checkout(dir: &Path, commit: &str) -> PathBuf {
    let repo = dir.join("checkout");
    let trust = dir.join("trust.gitconfig");
    std::fs::write(&trust, "[safe]\n\tdirectory = *\n").unwrap();
    host(&format!(
        "GIT_CONFIG_GLOBAL='{t}' git clone -q '/srv/ctops sandbox/origin.git' '{d}' && git -C '{d}' checkout -q -B main {commit}",
        t = trust.display(),
        d = repo.display()
    ));
    repo
}

/// Puts the sandbox back (its pristine `.env`, the role's password, the stack) however the
/// test ends; a reset that fails in a panicking test is reported, not a second panic.
struct ResetOnDrop;

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sandbox/sandbox.sh");
        match Command::new(script).arg("reset-host").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("reset-host: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("reset-host: {e}"),
        }
    }
}

#[test]
fn no_secret_reaches_any_output_log_argv_or_the_database_server() {
    let _guard = exclusive();
    reset_host();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().unwrap();
    // A fast gate (services stable for 1 s) keeps the run short; everything else as configured.
    let config = variant_config(dir.path(), |t| {
        t.replace("stable_for = \"4s\"", "stable_for = \"1s\"")
    });
    let public = format!(
        "{}\n{}",
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(format!("{CHECKOUT}/infrastructure/docker-compose.yml")).unwrap()
    );
    let mut sweep = Sweep {
        config,
        dir,
        ran: Vec::new(),
        editor: None,
        secrets: Secrets {
            public,
            ..Default::default()
        },
    };
    let started = SystemTime::now();

    // Distinctive values planted in .env: one that URL-encoding changes, and a URL holding
    // credentials. (Written from here: a value on a host command line would be a leak of
    // the test's own.)
    let planted_token = format!("Sw33pTok{}@x/y:z+w", random(16));
    let planted_url = format!(
        "https://sweep:{}%40pw@hooks.invalid/T0/{}",
        random(20),
        random(24)
    );
    let mut text = std::fs::read_to_string(env_path()).unwrap();
    text.push_str(&format!(
        "SWEEP_API_TOKEN={planted_token}\nSWEEP_WEBHOOK_URL={planted_url}\n"
    ));
    std::fs::write(env_path(), text).unwrap();
    sweep.learn();
    sweep
        .secrets
        .add_verifier("POSTGRES_PASSWORD", &role_verifier());
    let repo = local_checkout(sweep.dir.path(), &head_commit());
    let repo_arg = repo.display().to_string();
    let snapshots = sweep.dir.path().join("incident");
    std::fs::create_dir(&snapshots).unwrap();
    let snapshots_arg = snapshots.display().to_string();

    let mut witnesses = Witnesses::start();
    let t1 = random(24);
    let x1 = format!("x1-{}", random(20));
    let t2 = format!("Sw33p2{}/+:@", random(18));
    let x2 = format!("x2-{}", random(20));
    let bot_token = format!("1234567890:Sw33pBot{}", random(27));
    let commit = head_commit();

    // The changes, each with and without --json, between the reads.
    sweep.run(&["backup", "env"], None, &[0]);
    let first_copy = sweep.newest_env_copy();
    let set1 = format!("SWEEP_API_TOKEN={t1}");
    let extra1 = format!("SWEEP_EXTRA_SECRET={x1}");
    sweep.run(
        &["env", "set", &set1, &extra1, "--restart", "api"],
        None,
        &[0],
    );
    sweep.run(
        &[
            "env",
            "unset",
            "SWEEP_EXTRA_SECRET",
            "--restart",
            "api",
            "--json",
        ],
        None,
        &[0],
    );
    sweep.run(&["restore", "env", &first_copy, "--yes"], None, &[0]);
    sweep.run(
        &["rotate", "POSTGRES_PASSWORD", "--generate", "--yes"],
        None,
        &[0],
    );
    sweep
        .secrets
        .add_verifier("POSTGRES_PASSWORD", &role_verifier());
    sweep.run(
        &[
            "rotate",
            "TELEGRAM_BOT_TOKEN",
            "--from-stdin",
            "--yes",
            "--json",
        ],
        Some(&format!("{bot_token}\n")),
        &[0],
    );
    sweep.run(
        &[
            "rotate",
            "POSTGRES_PASSWORD",
            "--generate",
            "--yes",
            "--json",
        ],
        None,
        &[0],
    );
    sweep
        .secrets
        .add_verifier("POSTGRES_PASSWORD", &role_verifier());
    sweep.run(&["backup", "env", "--json"], None, &[0]);
    let second_copy = sweep.newest_env_copy();
    let set2 = format!("SWEEP_API_TOKEN={t2}");
    let extra2 = format!("SWEEP_EXTRA_SECRET={x2}");
    sweep.run(
        &["env", "set", &set2, &extra2, "--restart", "api", "--json"],
        None,
        &[0],
    );
    sweep.run(
        &["env", "unset", "SWEEP_EXTRA_SECRET", "--restart", "api"],
        None,
        &[0],
    );
    sweep.run(
        &["restore", "env", &second_copy, "--yes", "--json"],
        None,
        &[0],
    );
    // `env edit` with an editor that appends a line kept in a file (`cat` has only the
    // file's name on its command line).
    let line = sweep.dir.path().join("edited-line");
    let editor = sweep.dir.path().join("editor");
    std::fs::write(
        &editor,
        format!("#!/bin/sh\ncat '{}' >> \"$1\"\n", line.display()),
    )
    .unwrap();
    host(&format!("chmod +x '{}'", editor.display()));
    sweep.editor = Some(editor);
    for (key, json) in [("SWEEP_EDITED_1", None), ("SWEEP_EDITED_2", Some("--json"))] {
        std::fs::write(&line, format!("{key}=Ed1t{}@e/d\n", random(18))).unwrap();
        let mut args = vec!["env", "edit", "--restart", "api"];
        args.extend(json);
        sweep.run(&args, None, &[0]);
    }
    sweep.editor = None;
    // The dry runs print the plans: values and verifiers must not be in them.
    // A value only a dry run sees never reaches .env: it is looked for all the same.
    let dry = random(24);
    sweep.secrets.add("SWEEP_API_TOKEN (dry run)", &dry);
    let set3 = format!("SWEEP_API_TOKEN={dry}");
    sweep.both(
        &["env", "set", &set3, "--restart", "api", "--dry-run"],
        &[0],
    );
    sweep.both(
        &["rotate", "POSTGRES_PASSWORD", "--generate", "--dry-run"],
        &[0],
    );
    sweep.both(&["restore", "env", "latest", "--dry-run"], &[0]);
    sweep.both(
        &[
            "deploy",
            "--ref",
            &commit,
            "--skip-preflight",
            "--reason",
            "sweep",
            "--dry-run",
        ],
        &[0],
    );

    // Everything else that runs against the sandbox.
    sweep.both(&["config", "check"], &[0]);
    sweep.both(&["status"], &[0]);
    sweep.both(&["health"], &[0]);
    sweep.both(&["releases"], &[0]);
    sweep.both(&["logs", "--tail", "200"], &[0]);
    sweep.both(&["stats"], &[0]);
    sweep.both(&["disk"], &[0]);
    sweep.both(&["lock", "status"], &[0]);
    sweep.both(&["access", "list"], &[0]);
    sweep.both(&["env", "list"], &[0]);
    sweep.both(&["env", "diff", &first_copy], &[0]);
    sweep.both(&["backup", "db"], &[0]);
    sweep.both(&["backup", "list"], &[0]);
    sweep.both(&["backup", "verify", "latest"], &[0]);
    sweep.both(&["backup", "minio"], &[0]);
    sweep.both(&["backup", "all"], &[0]);
    sweep.both(&["lock", "release", "--yes"], &[0, 4]);
    sweep.both(&["preflight", "--repo", &repo_arg], &[0, 1, 4]);
    sweep.both(&["incident", "snapshot", "--out", &snapshots_arg], &[0]);
    sweep.both(&["restart", "bot"], &[0]);
    sweep.both(&["up", "bot"], &[0]);
    sweep.both(
        &[
            "deploy",
            "--ref",
            &commit,
            "--skip-preflight",
            "--reason",
            "sweep",
        ],
        &[0],
    );
    sweep.both(
        &["deploy", "--ref", &commit, "--repo", &repo_arg],
        &[0, 1, 4],
    );
    let seen = witnesses.finish();
    drop(witnesses);

    // Every value the run planted or changed is among those looked for.
    for (what, value) in [
        ("the planted token", planted_token.as_str()),
        ("the planted URL", planted_url.as_str()),
        ("env set's values", t1.as_str()),
        ("env set's values", x2.as_str()),
        ("the rotated bot token", bot_token.as_str()),
    ] {
        assert!(
            sweep.secrets.values.contains_key(value),
            "{what} is not among the secrets looked for"
        );
    }
    let verifiers = sweep
        .secrets
        .needles
        .values()
        .filter(|l| l.contains("SCRAM"))
        .count();
    assert_eq!(verifiers, 3, "the initial and two rotated verifiers");

    // The witnesses saw the run: otherwise the sweep would pass without looking.
    assert!(
        seen.argv
            .iter()
            .any(|a| a.contains("compose") && a.contains(" up ")),
        "the argv sampler saw no `compose up`"
    );
    assert!(
        seen.server_log.contains("statement: "),
        "PostgreSQL logged no statement: log_statement = all did not take"
    );
    assert!(
        seen.activity_samples > 100,
        "pg_stat_activity was read {} times",
        seen.activity_samples
    );

    let mut haystacks: Haystacks = Vec::new();
    for ran in &sweep.ran {
        let cmd = format!("`ctops -vvv {}`", ran.args.join(" "));
        haystacks.push((format!("the stdout of {cmd}"), ran.stdout.clone()));
        haystacks.push((format!("the stderr of {cmd}"), ran.stderr.clone()));
    }
    for (path, text) in files_under(Path::new(STATE_DIR), &|_, _| true) {
        haystacks.push((state_file_place(&path), text));
    }
    let deploy_uid = host("id -u deploy").trim().parse::<u32>().unwrap();
    let since = started - Duration::from_secs(1);
    for (path, text) in files_under(Path::new("/tmp"), &|_, meta| {
        meta.uid() == deploy_uid && meta.modified().map(|m| m >= since).unwrap_or(false)
    }) {
        haystacks.push((format!("a file left in /tmp ({path})"), text));
    }
    for (path, text) in files_under(&snapshots, &|_, _| true) {
        haystacks.push((format!("an incident snapshot file ({path})"), text));
    }
    for argv in &seen.argv {
        haystacks.push((
            format!("the argv of a process on the host: {argv}"),
            argv.clone(),
        ));
    }
    haystacks.push((
        "PostgreSQL's log (log_statement = all)".into(),
        seen.server_log.clone(),
    ));
    for q in &seen.queries {
        haystacks.push((format!("pg_stat_activity: {q}"), q.clone()));
    }
    let found = leaks(&sweep.secrets, &haystacks);
    eprintln!(
        "sweep: {} commands, {} values ({} needles), {} argv, {} queries in {} samples, {} places",
        sweep.ran.len(),
        sweep.secrets.values.len(),
        sweep.secrets.needles.len(),
        seen.argv.len(),
        seen.queries.len(),
        seen.activity_samples,
        haystacks.len()
    );
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

/// The sweep can fail: each form of a secret planted in a haystack is found and named, and
/// the failure message never holds the value.
#[test]
fn the_sweep_names_every_form_of_a_leaked_secret_and_never_its_value() {
    let mut secrets = Secrets {
        public: "database = \"trader_psy\"".into(),
        ..Default::default()
    };
    let password = "Pw0rd@sweep/1:+x";
    secrets.add_env(&format!(
        "POSTGRES_PASSWORD={password}\nDATABASE_URL=postgresql://trader:Pw0rd%40sweep%2F1%3A%2Bx@h/db\nPOSTGRES_DB=trader_psy\nAPP_MODE=normal\n"
    ));
    let verifier = ctops::scram::verifier(password);
    secrets.add_verifier("POSTGRES_PASSWORD", &ctops::scram::verifier(password));
    let cases = [
        (format!("echo {password}"), "POSTGRES_PASSWORD (plain)"),
        (
            "x Pw0rd%40sweep%2F1%3A%2Bx y".to_string(),
            "POSTGRES_PASSWORD (URL-encoded)",
        ),
        (
            format!("ALTER ROLE trader PASSWORD '{verifier}';"),
            "POSTGRES_PASSWORD (as a SCRAM verifier)",
        ),
    ];
    for (haystack, label) in &cases {
        let found = leaks(&secrets, &vec![("a place".to_string(), haystack.clone())]);
        assert!(
            found.iter().any(|f| f.starts_with(label)),
            "{label} not found: {found:?}"
        );
        for line in &found {
            assert!(
                !line.contains(password) && !line.contains(&verifier),
                "{line}"
            );
        }
    }
    // The settings are no secrets: `trader_psy` is in the config, `normal` is short.
    assert!(leaks(
        &secrets,
        &vec![("p".into(), "trader_psy normal trader".into())]
    )
    .is_empty());
    // A place that holds the secret is shown redacted.
    let found = leaks(
        &secrets,
        &vec![(format!("argv: psql {password}"), String::new())],
    );
    assert!(found.is_empty());
    let redacted = secrets.redact(&format!("argv: psql {password} '{verifier}'"));
    assert!(
        !redacted.contains(password) && !redacted.contains(&verifier),
        "{redacted}"
    );
}
