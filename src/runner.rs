//! The detached runner: an operation's plan rendered to a shell script that runs on the
//! host under `setsid`, so the critical section (migrate, switch, health gate, automatic
//! rollback) completes even if the operator's connection drops. The script journals every
//! step; ctops streams the journal while connected, and the next command reads it.
//!
//! The script is also what `--dry-run` prints: the plan and its execution are one text.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::Error;
use crate::lock::{LOCK_FUNCTIONS, RENEW_EVERY};
use crate::remote::{assign, quote, Remote, RemoteCommand};

/// A JSON object's fields without the braces, as the runner's record lines embed them.
pub fn json_fields(object: &serde_json::Value) -> String {
    object
        .to_string()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_string()
}

/// The audit entry's fields of an operation run as a plan: who, from where, what, on which
/// target, which operation.
pub fn audit_fields(target: &str, command: &str, op_id: &str) -> serde_json::Value {
    let (user, host) = crate::lock::operator();
    serde_json::json!({"user": user, "host": host, "command": command, "target": target, "op": op_id})
}

/// The runner's functions: journal, fencing, steps, the gate, container lookup.
const RUNNER_FUNCTIONS: &str = include_str!("scripts/runner.sh");
/// The runner's main part: lease, journal, forward, back, record, release.
const RUNNER_MAIN: &str = include_str!("scripts/runner-main.sh");
/// Uploads the script (stdin) and starts it detached.
const START: &str = include_str!("scripts/runner-start.sh");
/// The last operation: id, alive, seen, journal.
const LAST_SCRIPT: &str = include_str!("scripts/runner-last.sh");

/// The journal's format, written as its first line (`format`). A ctops that finds a format
/// it does not know on the host refuses to change it: a newer ctops left that journal.
pub const JOURNAL_FORMAT: u32 = 1;

/// One step of a plan: a shell function body made of quoted commands.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: &'static str,
    pub title: String,
    pub body: String,
    /// A flag set to 1 when the step *starts*: for a step that can fail half-way (a
    /// migration, a partial stop), whose undo must run even when it failed.
    pub marks: Option<&'static str>,
    /// A flag set to 1 once the step *succeeded*: for a step that is all or nothing (a
    /// swap in one transaction) or whose undo needs what it made (kept images).
    pub marks_when_done: Option<&'static str>,
    /// For steps that undo: run only when this flag is 1.
    pub when: Option<&'static str>,
}

/// Each line stops the step at once when it fails: the step's status is its first failing
/// command's. (`set -e` cannot do this: `run_step ... || return 1` turns it off beneath.)
fn fail_fast<I: IntoIterator<Item = String>>(lines: I) -> String {
    lines
        .into_iter()
        .map(|l| format!("{l} || return $?"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Step {
    /// A step of commands run one after the other, stopping at the first that fails.
    pub fn new(id: &'static str, title: impl Into<String>, commands: &[RemoteCommand]) -> Self {
        // The runner has no channel to watch: its commands run as they are.
        let body = fail_fast(
            commands
                .iter()
                .map(|c| c.clone().without_watcher().render()),
        );
        Step::shell(id, title, body)
    }

    /// A step of lines of ctops's shell (calls of the runner's functions with quoted
    /// words), stopping at the first that fails.
    pub fn lines(id: &'static str, title: impl Into<String>, lines: Vec<String>) -> Self {
        Step::shell(id, title, fail_fast(lines))
    }

    /// A step whose body is ctops's own shell text (using the script's functions); it
    /// handles its commands' failures itself.
    pub fn shell(id: &'static str, title: impl Into<String>, body: impl Into<String>) -> Self {
        Step {
            id,
            title: title.into(),
            body: body.into(),
            marks: None,
            marks_when_done: None,
            when: None,
        }
    }

    /// Sets `flag` when the step starts (see [`Step::marks`]).
    pub fn marks(mut self, flag: &'static str) -> Self {
        self.marks = Some(flag);
        self
    }

    /// Sets `flag` once the step succeeded (see [`Step::marks_when_done`]).
    pub fn marks_when_done(mut self, flag: &'static str) -> Self {
        self.marks_when_done = Some(flag);
        self
    }

    pub fn when(mut self, flag: &'static str) -> Self {
        self.when = Some(flag);
        self
    }
}

/// A whole operation: forward steps, and the steps that undo them on failure.
#[derive(Debug, Clone)]
pub struct Plan {
    pub op: &'static str,
    pub op_id: String,
    pub describe: String,
    /// Shell variables the steps use, as names and plain values (rendered quoted).
    pub vars: Vec<(&'static str, String)>,
    pub forward: Vec<Step>,
    pub back: Vec<Step>,
    /// The outcome when every forward step succeeds (`deployed`, `rolled back to`, ...).
    pub success: &'static str,
    /// JSON fields (no braces) for the release record, without `at` and `result`.
    pub release_fields: Option<String>,
    /// JSON fields for the audit entry, without `at` and `result`.
    pub audit_fields: String,
    /// JSON fields of the release running before, recorded as `found` when the history is
    /// empty (so the first deploy can be rolled back).
    pub seed_release: Option<String>,
}

/// How often the runner renews its lease (the lock's own lease, [`crate::lock::lease`],
/// which the test hook `CTOPS_LOCK_LEASE` shortens): at least three times a lease.
fn renew_every(lease: Duration) -> Duration {
    RENEW_EVERY.min(lease / 3).max(Duration::from_secs(1))
}

impl Plan {
    /// Every flag the script reads or sets, once each.
    fn flags(&self) -> Vec<&'static str> {
        let mut flags: Vec<&'static str> = self
            .forward
            .iter()
            .chain(&self.back)
            .flat_map(|st| [st.marks, st.marks_when_done, st.when])
            .flatten()
            .collect();
        flags.sort();
        flags.dedup();
        flags
    }

    /// The script that runs on the host. Every value is a quoted word: variables rendered
    /// by [`assign`], titles and ids quoted in the step calls, commands rendered quoted.
    pub fn render(&self, state_dir: &str, token: &str) -> String {
        self.render_with(state_dir, token, crate::lock::lease())
    }

    fn render_with(&self, state_dir: &str, token: &str, lease: Duration) -> String {
        let mut s = String::from(
            "#!/bin/sh\n# ctops runner: the plan of one operation (see src/runner.rs)\nset -u\n",
        );
        let values = [
            ("D", state_dir.to_string()),
            ("OP", self.op_id.clone()),
            ("TOKEN", token.to_string()),
            ("LEASE", lease.as_secs().to_string()),
            ("RENEW", renew_every(lease).as_secs().to_string()),
            ("OP_KIND", self.op.to_string()),
            ("DESCRIBE", self.describe.clone()),
            ("SUCCESS", self.success.to_string()),
            ("JOURNAL_FORMAT", JOURNAL_FORMAT.to_string()),
            (
                "RELEASE_FIELDS",
                self.release_fields.clone().unwrap_or_default(),
            ),
            ("SEED_FIELDS", self.seed_release.clone().unwrap_or_default()),
            ("AUDIT_FIELDS", self.audit_fields.clone()),
        ];
        for (name, value) in values
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(self.vars.iter().map(|(n, v)| (*n, v.as_str())))
        {
            s.push_str(&assign(name, value));
            s.push('\n');
        }
        s.push_str("O=\"$D/ops/$OP\"\nJ=\"$O/journal\"\n");
        // Every flag starts at 0: the script runs under `set -u`, and a flag nobody set
        // must read as "not done", not stop the runner before it frees the lock.
        for flag in self.flags() {
            s.push_str(&assign(flag, "0"));
            s.push('\n');
        }
        s.push_str(LOCK_FUNCTIONS);
        s.push_str(RUNNER_FUNCTIONS);
        for step in self.forward.iter().chain(&self.back) {
            let body = if step.body.trim().is_empty() {
                ":"
            } else {
                &step.body
            };
            s.push_str(&format!("s_{}() {{\n{}\n}}\n", step.id, indent(body)));
        }
        s.push_str("forward() {\n");
        for step in &self.forward {
            s.push_str(&format!(
                "    run_step forward {} {} {} {} || return 1\n",
                quote(step.id),
                quote(step.marks.unwrap_or("")),
                quote(step.marks_when_done.unwrap_or("")),
                quote(&step.title)
            ));
        }
        s.push_str("}\nback() {\n    failed=0\n");
        for step in &self.back {
            let call = format!(
                "run_step back {} '' '' {} || failed=1",
                quote(step.id),
                quote(&step.title)
            );
            match step.when {
                Some(flag) => s.push_str(&format!("    if [ \"${flag}\" = 1 ]; then {call}; fi\n")),
                None => s.push_str(&format!("    {call}\n")),
            }
        }
        s.push_str("    return $failed\n}\n");
        // Whether a forward step changed (or began to change) anything: if not, a failure
        // leaves the host as it was and nothing is undone.
        let set_by_forward: Vec<&str> = {
            let mut f: Vec<&str> = self
                .forward
                .iter()
                .flat_map(|st| [st.marks, st.marks_when_done])
                .flatten()
                .collect();
            f.sort();
            f.dedup();
            f
        };
        let changed = if set_by_forward.is_empty() {
            "false".to_string()
        } else {
            set_by_forward
                .iter()
                .map(|f| format!("[ \"${f}\" = 1 ]"))
                .collect::<Vec<_>>()
                .join(" || ")
        };
        s.push_str(&format!("changed() {{ {changed}; }}\n"));
        s.push_str(RUNNER_MAIN);
        s
    }
}

fn indent(body: &str) -> String {
    body.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starting the runner failed: the step and the script's last stderr lines, never its text.
fn start_failed(remote: &Remote, out: &crate::remote::Captured) -> Error {
    let stderr = out.stderr_text();
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    Error::failed(format!(
        "starting the operation's runner on {} failed (exit {}){}",
        remote.host(),
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// Uploads the script over stdin (atomically), starts it detached, returns its pid. Refuses
/// (exit 4) when the host's last journal has a format this ctops does not know.
pub async fn start(
    remote: &Remote,
    state_dir: &str,
    op_id: &str,
    script: &str,
) -> Result<u32, Error> {
    // Test hooks, passed to the runner: widen each step's window (CTOPS_STEP_DELAY) or make
    // one step fail after it ran (CTOPS_FAIL_STEP), for fault injection.
    let hooks: String = ["CTOPS_STEP_DELAY", "CTOPS_FAIL_STEP"]
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .map(|v| format!("{}; export {k}\n", assign(k, &v)))
        })
        .collect();
    let format = JOURNAL_FORMAT.to_string();
    let cmd = RemoteCommand::sh(&format!("{hooks}{START}"), [state_dir, op_id, &format]);
    remote.echo_input_script(script, "the runner, sent on stdin");
    let out = remote.run_with_input(&cmd, Some(script.as_bytes())).await?;
    if out.status == 65 {
        return Err(unknown_format(remote.host(), out.stdout_text().trim()));
    }
    if out.status == crate::lock::NOT_WRITABLE {
        return Err(start_failed(remote, &out).with_help(crate::lock::setup_help(remote.host())));
    }
    if out.status != 0 {
        return Err(start_failed(remote, &out));
    }
    out.stdout_text().trim().parse().map_err(|_| {
        Error::failed(format!(
            "the runner did not start on {}: {}",
            remote.host(),
            out.stderr_text().trim()
        ))
    })
}

fn unknown_format(host: &str, found: &str) -> Error {
    Error::refused(format!(
        "the last operation's journal on {host} has format {found:?}, which this ctops (journal format {JOURNAL_FORMAT}) does not know: a newer ctops ran there; nothing was changed"
    ))
    .with_help("upgrade ctops to the version the other operators use")
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub at: String,
    pub millis: u64,
    pub kind: String,
    pub step: String,
    pub detail: String,
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
        let mut parts = line.trim_end_matches('\n').splitn(5, '\t');
        let at = parts.next()?.to_string();
        let millis = parts.next()?.parse().ok()?;
        let kind = parts.next()?.to_string();
        let step = parts.next().unwrap_or("").to_string();
        let detail = parts.next().unwrap_or("").to_string();
        Some(Event {
            at,
            millis,
            kind,
            step,
            detail,
        })
    }
}

/// Streams the runner's journal until its `end` line (or until the runner dies), calling
/// `on_event` for each line. Returns the outcome, or `None` when the runner ended without one.
/// With `output`, the steps' own output (build logs, alembic) is streamed to stderr too.
pub async fn follow<F>(
    remote: &Remote,
    state_dir: &str,
    op_id: &str,
    pid: u32,
    output: bool,
    mut on_event: F,
) -> Result<Option<String>, Error>
where
    F: FnMut(&Event),
{
    let dir = format!("{}/ops/{op_id}", state_dir.trim_end_matches('/'));
    let tail = |file: &str| {
        let path = format!("{dir}/{file}");
        RemoteCommand::new([
            "tail",
            "-s",
            "0.2",
            "-n",
            "+1",
            "-F",
            &format!("--pid={pid}"),
            path.as_str(),
        ])
        .read_only()
        .stop_on_disconnect()
    };
    let cmd = tail("journal");
    let step_output = async {
        if output {
            let _ = remote
                .stream(
                    &tail("output.log"),
                    &mut crate::output::local_stderr(),
                    None,
                )
                .await;
        }
    };
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let stream = async {
        let status = remote.stream(&cmd, &mut writer, None).await;
        drop(writer);
        status
    };
    let read = async {
        let mut lines = BufReader::new(reader).lines();
        let mut outcome = None;
        while let Ok(Some(line)) = lines.next_line().await {
            // The format line is for the next ctops, not a step.
            if let Some(event) = Event::parse(&line).filter(|e| e.kind != "format") {
                on_event(&event);
                if event.kind == "end" {
                    outcome = Some(event.step.clone());
                    break;
                }
            }
        }
        outcome
    };
    // The `end` line is the end: stop the tails at once rather than wait for them to notice
    // that the runner exited.
    let streams = async { tokio::join!(stream, step_output).0 };
    tokio::pin!(read, streams);
    tokio::select! {
        outcome = &mut read => Ok(outcome),
        status = &mut streams => {
            status?;
            Ok(read.await)
        }
    }
}

/// Marks an operation's end as seen by an operator.
pub async fn mark_seen(remote: &Remote, state_dir: &str, op_id: &str) -> Result<(), Error> {
    let cmd = RemoteCommand::sh(r#": > "$1/ops/$2/seen""#, [state_dir, op_id]);
    remote.run_ok(&cmd).await.map(|_| ())
}

/// Asks the runner to stop after its current step and roll back.
pub async fn request_abort(remote: &Remote, state_dir: &str, op_id: &str) -> Result<(), Error> {
    let cmd = RemoteCommand::sh(r#": > "$1/ops/$2/abort""#, [state_dir, op_id]);
    remote.run_ok(&cmd).await.map(|_| ())
}

/// The last operation the host ran, as `status` and the next change report it.
#[derive(Debug, Clone, Serialize)]
pub struct LastOperation {
    pub id: String,
    pub op: String,
    pub describe: String,
    /// `running`, `interrupted` (the runner died mid-way), or the outcome.
    pub state: String,
    pub started: String,
    pub ended: Option<String>,
    /// Whether a ctops saw the end (false: it finished while nobody watched).
    pub watched: bool,
    pub steps: Vec<Event>,
    /// The journal's format (`None`: a journal from before formats were written).
    #[serde(skip)]
    pub format: Option<String>,
}

impl LastOperation {
    /// Refuses (exit 4) a journal whose format this ctops does not know.
    pub fn known_format(&self, host: &str) -> Result<(), Error> {
        match self.format.as_deref() {
            Some(f) if f != JOURNAL_FORMAT.to_string() => Err(unknown_format(host, f)),
            _ => Ok(()),
        }
    }
}

/// Reads the last operation's journal (read-only).
pub async fn last_operation(
    remote: &Remote,
    state_dir: &str,
) -> Result<Option<LastOperation>, Error> {
    let out = remote
        .run_ok(&RemoteCommand::sh(LAST_SCRIPT, [state_dir]).read_only())
        .await?;
    let text = out.stdout_text();
    let mut lines = text.lines();
    let (Some(id), Some(alive), Some(seen)) = (lines.next(), lines.next(), lines.next()) else {
        return Ok(None);
    };
    let events: Vec<Event> = lines.filter_map(Event::parse).collect();
    let format = events
        .iter()
        .find(|e| e.kind == "format")
        .map(|e| e.step.clone());
    let begin = events.iter().find(|e| e.kind == "begin");
    let end = events.iter().find(|e| e.kind == "end");
    let state = match (end, alive) {
        (Some(e), _) => e.step.clone(),
        (None, "running") => "running".into(),
        (None, _) => "interrupted".into(),
    };
    Ok(Some(LastOperation {
        id: id.to_string(),
        op: begin.map(|b| b.step.clone()).unwrap_or_default(),
        describe: begin.map(|b| b.detail.clone()).unwrap_or_default(),
        state,
        started: begin.map(|b| b.at.clone()).unwrap_or_default(),
        ended: end.map(|e| e.at.clone()),
        watched: seen == "seen",
        steps: events
            .into_iter()
            .filter(|e| !matches!(e.kind.as_str(), "begin" | "end" | "format"))
            .collect(),
        format,
    }))
}

/// An operation id: UTC time from the host, the operation, and a short random part.
pub fn op_id(host_time: i64, op: &str) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(host_time.max(0) as u64);
    let stamp = humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace([':', '-'], "");
    format!("{stamp}-{op}-{}", &crate::lock::new_token()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn trail(id: &str) -> String {
        format!("echo {id} >> \"$O/trail\"")
    }

    fn plan(fail_at: Option<&'static str>, back_fails: bool) -> Plan {
        let step = |id: &'static str| {
            let body = if Some(id) == fail_at {
                "echo broken >&2; exit 3".to_string()
            } else {
                trail(id)
            };
            Step::shell(id, format!("step {id}"), body)
        };
        Plan {
            op: "deploy",
            op_id: "op1".into(),
            describe: "deploy 'x' (test)".into(),
            vars: [
                ("P", "proj"),
                ("HEALTH_URL", "http://127.0.0.1:1/health"),
                ("HEALTH_TIMEOUT", "1"),
                ("HEALTH_INTERVAL", "0.1"),
                ("STABLE_FOR", "0"),
            ]
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect(),
            forward: vec![
                step("checkout").marks("CHANGED"),
                step("migrate").marks("MIGRATING"),
                step("gate"),
            ],
            back: vec![
                Step::shell(
                    "downgrade",
                    "undo migrate",
                    if back_fails {
                        "exit 1".to_string()
                    } else {
                        trail("downgrade")
                    },
                )
                .when("MIGRATING"),
                Step::shell("checkout_back", "undo checkout", trail("checkout_back"))
                    .when("CHANGED"),
            ],
            success: "deployed",
            release_fields: Some(r#""ref":"v1","commit":"abc""#.into()),
            audit_fields: r#""command":"deploy""#.into(),
            seed_release: Some(r#""ref":"v0","commit":"old""#.into()),
        }
    }

    fn base_vars() -> Vec<(&'static str, String)> {
        plan(None, false).vars
    }

    /// A state dir holding the lock, and a PATH whose `docker` and `curl` are stubs (the
    /// gate finds a healthy API and no containers).
    struct Host {
        dir: tempfile::TempDir,
        path: String,
    }

    impl Host {
        fn new() -> Host {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("ops/op1")).unwrap();
            std::fs::write(dir.path().join("lock"), "token=tok\nexpires=99999999999\n").unwrap();
            let bin = dir.path().join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for (name, text) in [
                (
                    "docker",
                    "#!/bin/sh\necho \"docker $*\" >> \"$STUB_LOG\"\ncase $1 in ps) echo cid1 ;; inspect) case $* in *Labels*) echo 'api running 0 cid1' ;; *) echo sha256:1 ;; esac ;; esac\n",
                ),
                ("curl", "#!/bin/sh\necho '{\"status\":\"ok\"}'\n"),
            ] {
                let file = bin.join(name);
                std::fs::write(&file, text).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let path = format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            Host { dir, path }
        }

        fn d(&self) -> &Path {
            self.dir.path()
        }

        fn file(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn read(&self, rel: &str) -> String {
            std::fs::read_to_string(self.file(rel)).unwrap_or_default()
        }

        fn render(&self, plan: &Plan) -> String {
            plan.render_with(self.d().to_str().unwrap(), "tok", crate::lock::LEASE)
        }

        /// Runs the rendered script with `shell` (`sh -u`, `dash`), `env` added.
        fn run_with(&self, shell: &[&str], script: &str, env: &[(&str, &str)]) -> Vec<Event> {
            let mut cmd = Command::new(shell[0]);
            cmd.args(&shell[1..])
                .arg("-c")
                .arg(script)
                .env("PATH", &self.path)
                .env("STUB_LOG", self.file("stub.log"))
                .env_remove("CTOPS_FAIL_STEP")
                .env_remove("CTOPS_STEP_DELAY");
            for (k, v) in env {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{:?} {}\n{script}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stderr.is_empty(),
                "the runner said: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.read("ops/op1/journal")
                .lines()
                .filter_map(Event::parse)
                .collect()
        }

        fn run(&self, plan: &Plan) -> Vec<Event> {
            self.run_with(&["sh", "-u"], &self.render(plan), &[])
        }
    }

    /// Runs a rendered plan with a real shell in a temporary state dir, holding the lock.
    fn run(plan: &Plan) -> (Host, Vec<Event>, String) {
        let host = Host::new();
        let events = host.run(plan);
        let trail = host.read("ops/op1/trail");
        (host, events, trail)
    }

    fn outcome(events: &[Event]) -> String {
        events
            .iter()
            .find(|e| e.kind == "end")
            .unwrap_or_else(|| panic!("no end: {events:?}"))
            .step
            .clone()
    }

    #[test]
    fn a_plan_that_succeeds_records_the_release_and_frees_the_lock() {
        let (host, events, trail) = run(&plan(None, false));
        assert_eq!(outcome(&events), "deployed");
        assert_eq!(trail, "checkout\nmigrate\ngate\n");
        let releases = host.read("releases.jsonl");
        let lines: Vec<&str> = releases.lines().collect();
        let found: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            (found["result"].as_str(), found["ref"].as_str()),
            (Some("found"), Some("v0"))
        );
        let record: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            (record["result"].as_str(), record["ref"].as_str()),
            (Some("deployed"), Some("v1"))
        );
        assert!(!host.file("lock").exists());
        assert!(events
            .iter()
            .any(|e| e.kind == "begin" && e.detail == "deploy 'x' (test)"));
        assert_eq!(
            (events[0].kind.as_str(), events[0].step.as_str()),
            ("format", "1"),
            "the journal says its format first"
        );
    }

    #[test]
    fn a_failed_step_undoes_exactly_what_started() {
        let (_host, events, trail) = run(&plan(Some("migrate"), false));
        assert_eq!(outcome(&events), "rolled-back");
        assert_eq!(trail, "checkout\ndowngrade\ncheckout_back\n");
        let fail = events.iter().find(|e| e.kind == "fail").unwrap();
        assert_eq!(fail.step, "migrate");
        assert!(
            fail.detail.contains("exit 3") && fail.detail.contains("broken"),
            "{fail:?}"
        );

        let (_host, events, trail) = run(&plan(Some("checkout"), false));
        assert_eq!(outcome(&events), "rolled-back");
        assert_eq!(trail, "checkout_back\n");
    }

    #[test]
    fn a_failed_undo_is_reported_as_such() {
        let (host, events, _) = run(&plan(Some("gate"), true));
        assert_eq!(outcome(&events), "rollback-failed");
        let releases = host.read("releases.jsonl");
        assert!(
            !releases.contains("deployed"),
            "only a success is a release: {releases}"
        );
        assert!(host
            .read("audit.jsonl")
            .contains(r#""result":"rollback-failed""#));
    }

    #[test]
    fn a_failed_plan_that_sets_no_flag_ends_and_frees_the_lock() {
        // Defect 1: a gate-only deploy (the running commit, nothing stopped) read a flag
        // nobody set, and `set -u` stopped the runner before it freed the lock.
        let gate_only = Plan {
            forward: vec![Step::shell("gate", "health check", "STABLE_FOR=0; gate ''")],
            back: vec![],
            ..plan(None, false)
        };
        let host = Host::new();
        let events = host.run_with(
            &["sh", "-u"],
            &host.render(&gate_only),
            &[("CTOPS_FAIL_STEP", "gate")],
        );
        assert_eq!(outcome(&events), "failed");
        assert!(!host.file("lock").exists(), "the lock is free");
        assert!(host.read("audit.jsonl").contains(r#""result":"failed""#));
    }

    #[test]
    fn a_step_stops_at_its_first_failing_command() {
        let host = Host::new();
        let second = host.file("second-ran");
        let second = second.to_str().unwrap();
        let step = Step::new(
            "two",
            "two commands",
            &[
                RemoteCommand::new(["false"]),
                RemoteCommand::new(["touch", second]),
            ],
        )
        .marks_when_done("DONE");
        let p = Plan {
            forward: vec![step],
            back: vec![Step::shell("undo", "undo", trail("undo")).when("DONE")],
            ..plan(None, false)
        };
        let events = host.run(&p);
        assert!(!Path::new(second).exists(), "the second command never ran");
        assert_eq!(outcome(&events), "failed", "{events:?}");
        assert_eq!(
            host.read("ops/op1/trail"),
            "",
            "a step that failed is not done"
        );
        assert_eq!(
            events
                .iter()
                .find(|e| e.kind == "fail")
                .map(|e| &e.step[..]),
            Some("two")
        );
    }

    #[test]
    fn a_flag_marked_when_done_is_set_only_by_success() {
        let p = |fail: bool| Plan {
            forward: vec![
                Step::shell("swap", "swap", if fail { "exit 1" } else { "true" })
                    .marks_when_done("SWAPPED"),
                Step::shell("stop", "stop", "true").marks("STOPPED"),
                Step::shell("gate", "gate", "exit 2"),
            ],
            back: vec![
                Step::shell("swap_back", "swap back", trail("swap_back")).when("SWAPPED"),
                Step::shell("start", "start", trail("start")).when("STOPPED"),
            ],
            ..plan(None, false)
        };
        let (_h, events, trail) = run(&p(false));
        assert_eq!(
            (outcome(&events), trail.as_str()),
            ("rolled-back".into(), "swap_back\nstart\n")
        );
        let (_h, events, trail) = run(&p(true));
        assert_eq!((outcome(&events), trail.as_str()), ("failed".into(), ""));
    }

    #[test]
    fn a_value_from_the_host_never_becomes_shell_code() {
        // Defect 6: the describe (a manifest's name) sat unquoted in a comment line.
        let host = Host::new();
        let planted = host.file("planted");
        let evil = format!(
            "restore db-x\ntouch {p}\n$(touch {p}) `touch {p}`\texpires=1\tend\tdeployed",
            p = planted.display()
        );
        let p = Plan {
            describe: evil.clone(),
            forward: vec![Step::shell("gate", evil.clone(), "true")],
            back: vec![],
            vars: [base_vars(), vec![("DESCRIBED", evil.clone())]].concat(),
            audit_fields: format!("\"command\":{}", serde_json::json!(evil)),
            ..plan(None, false)
        };
        let script = host.render(&p);
        let events = host.run(&p);
        assert!(!planted.exists(), "{script}");
        assert_eq!(outcome(&events), "deployed");
        let ends: Vec<&Event> = events.iter().filter(|e| e.kind == "end").collect();
        assert_eq!(ends.len(), 1, "no forged journal line: {events:?}");
        assert!(
            script
                .lines()
                .filter(|l| l.starts_with('#'))
                .all(|l| !l.contains("db-x")),
            "no value in a comment: {script}"
        );
    }

    /// Every plan variant renders to a script that `dash -n` and `shellcheck -s sh` accept,
    /// and that runs to `end` under `sh -u` and `dash -u` when it succeeds and when its last
    /// forward step fails.
    #[test]
    fn every_plan_variant_renders_valid_shell_that_runs_to_its_end() {
        let base = plan(None, false);
        let cmd = |id: &'static str| {
            Step::new(
                id,
                format!("{id} with commands"),
                &[RemoteCommand::new(["docker", "tag", "a:1", "a:latest"]).in_dir("/tmp")],
            )
        };
        let variants: Vec<(&str, Plan)> = vec![
            (
                "no flags at all",
                Plan {
                    forward: vec![Step::shell("gate", "gate", "STABLE_FOR=0; gate ''")],
                    back: vec![],
                    ..base.clone()
                },
            ),
            (
                "forward steps with marks, no back",
                Plan {
                    forward: vec![cmd("a").marks("A"), cmd("b").marks("B")],
                    back: vec![],
                    ..base.clone()
                },
            ),
            (
                "only back steps",
                Plan {
                    forward: vec![cmd("a")],
                    back: vec![
                        Step::shell("x", "x", "true").when("X"),
                        Step::shell("y", "y", "true"),
                    ],
                    ..base.clone()
                },
            ),
            (
                "marks when done",
                Plan {
                    forward: vec![cmd("a").marks_when_done("A"), cmd("b").marks("B")],
                    back: vec![cmd("undo_a").when("A"), cmd("undo_b").when("B")],
                    ..base.clone()
                },
            ),
            (
                "no release record, no seed",
                Plan {
                    release_fields: None,
                    seed_release: None,
                    ..base.clone()
                },
            ),
            (
                "a release record, no seed",
                Plan {
                    seed_release: None,
                    ..base.clone()
                },
            ),
            (
                "a seed, no release record",
                Plan {
                    release_fields: None,
                    ..base.clone()
                },
            ),
            (
                "an empty step",
                Plan {
                    forward: vec![
                        Step::new("images", "no images", &[]),
                        Step::lines("keep", "keep", vec![]),
                    ],
                    ..base.clone()
                },
            ),
            (
                "keep and gate",
                Plan {
                    forward: vec![
                        Step::lines("keep", "keep", vec!["keep_image api img tag".into()])
                            .marks_when_done("K"),
                        Step::shell("gate", "gate", "gate 1.0"),
                    ],
                    back: vec![Step::shell("undo_gate", "gate", "gate ''").when("K")],
                    ..base.clone()
                },
            ),
        ];
        for (name, p) in variants {
            let host = Host::new();
            let script = host.render(&p);
            let file = host.file("script.sh");
            std::fs::write(&file, &script).unwrap();
            let dash = Command::new("dash").arg("-n").arg(&file).output().unwrap();
            assert!(
                dash.status.success(),
                "{name}: dash -n: {}\n{script}",
                String::from_utf8_lossy(&dash.stderr)
            );
            let sc = Command::new("shellcheck")
                .args(["-s", "sh"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                sc.status.success(),
                "{name}: shellcheck:\n{}\n{script}",
                String::from_utf8_lossy(&sc.stdout)
            );
            let last = p.forward.last().unwrap().id;
            for (shell, fail) in [
                (["sh", "-u"], None),
                (["dash", "-u"], None),
                (["sh", "-u"], Some(last)),
            ] {
                let host = Host::new();
                let env: Vec<(&str, &str)> =
                    fail.map(|f| ("CTOPS_FAIL_STEP", f)).into_iter().collect();
                let events = host.run_with(&shell, &host.render(&p), &env);
                let end = outcome(&events);
                match fail {
                    None => assert_eq!(end, "deployed", "{name}: {events:?}"),
                    Some(_) => assert_ne!(end, "deployed", "{name}: {events:?}"),
                }
                assert!(!host.file("lock").exists(), "{name}: the lock is free");
            }
        }
    }

    #[test]
    fn step_output_and_the_script_are_private_and_the_shared_files_group_writable() {
        use std::os::unix::fs::PermissionsExt;
        let (host, _events, _) = run(&plan(None, false));
        let mode = |rel: &str| {
            std::fs::metadata(host.file(rel))
                .unwrap_or_else(|e| panic!("{rel}: {e}"))
                .permissions()
                .mode()
                & 0o777
        };
        for private in ["ops/op1/gate.log", "ops/op1/output.log"] {
            assert_eq!(mode(private), 0o600, "{private}");
        }
        for shared in [
            "ops/op1/journal",
            "audit.jsonl",
            "releases.jsonl",
            "last",
            "ops.flock",
            ".mutex",
        ] {
            assert_eq!(mode(shared), 0o660, "{shared}: {:o}", mode(shared));
        }
    }

    /// The journal and the step output exist (empty) when the runner's start returns, before
    /// any follower opens them: `tail -F` on a missing file would say so on the operator's
    /// screen. Their modes are the runner's own.
    #[test]
    fn the_files_ctops_follows_exist_before_the_runner_starts() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let host = Host::new();
        let mut start = Command::new("sh")
            .arg("-c")
            .arg(START)
            .arg("ctops")
            .arg(host.d())
            .arg("op9")
            .arg("1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A runner that writes nothing for a while.
        start.stdin.take().unwrap().write_all(b"sleep 2\n").unwrap();
        let out = start.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        for (file, mode) in [("ops/op9/journal", 0o660), ("ops/op9/output.log", 0o600)] {
            let meta = std::fs::metadata(host.file(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(meta.len(), 0, "{file}");
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
    }

    #[test]
    fn a_runner_killed_with_sigkill_leaves_a_lock_that_lapses_within_one_lease() {
        let host = Host::new();
        let p = Plan {
            forward: vec![Step::shell("wait", "wait", "sleep 30")],
            back: vec![],
            ..plan(None, false)
        };
        let lease = Duration::from_secs(3);
        let script = p.render_with(host.d().to_str().unwrap(), "tok", lease);
        let mut runner = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", &host.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !host.read("ops/op1/journal").contains("\tstart\twait") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the step never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The runner's pid alone: its process group would take the renewer with it.
        let killed = std::time::SystemTime::now();
        runner.kill().unwrap();
        // Not reaped on purpose for a while: a zombie runner is a dead runner.
        std::thread::sleep(lease + Duration::from_secs(2));
        let expires: u64 = host
            .read("lock")
            .lines()
            .find_map(|l| l.strip_prefix("expires="))
            .unwrap()
            .parse()
            .unwrap();
        let killed_at = killed
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            expires <= killed_at + lease.as_secs() + 1,
            "renewed after the runner died: expires {expires}, killed at {killed_at}"
        );
        std::thread::sleep(Duration::from_secs(2));
        let again: u64 = host
            .read("lock")
            .lines()
            .find_map(|l| l.strip_prefix("expires="))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(again, expires, "nobody renews it any more");
        let _ = runner.wait();
    }

    #[test]
    fn journal_lines_parse() {
        let e = Event::parse("2026-11-26T21:00:00Z\t1764190800123\tfail\tmigrate\texit 1: boom")
            .unwrap();
        assert_eq!(
            (e.kind.as_str(), e.step.as_str(), e.millis),
            ("fail", "migrate", 1764190800123)
        );
    }

    #[test]
    fn the_host_scripts_pass_shellcheck() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scripts");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sh"))
            .collect();
        files.sort();
        let out = Command::new("shellcheck")
            .args(["-s", "sh"])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
