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
use crate::lock::{LEASE, LOCK_FUNCTIONS, RENEW_EVERY};
use crate::remote::{quote, Remote, RemoteCommand};

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

/// One step of a plan: a shell function body made of quoted commands.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: &'static str,
    pub title: String,
    pub body: String,
    /// A flag set to 1 when the step starts (`CHANGED`, `MIGRATING`, ...).
    pub marks: Option<&'static str>,
    /// For steps that undo: run only when this flag is 1.
    pub when: Option<&'static str>,
}

impl Step {
    pub fn new(id: &'static str, title: impl Into<String>, commands: &[RemoteCommand]) -> Self {
        // The runner has no channel to watch: its commands run as they are.
        let body = commands
            .iter()
            .map(|c| c.clone().without_watcher().render())
            .collect::<Vec<_>>()
            .join("\n");
        Step {
            id,
            title: title.into(),
            body,
            marks: None,
            when: None,
        }
    }

    /// A step whose body is ctops's own shell text (using the script's functions).
    pub fn shell(id: &'static str, title: impl Into<String>, body: impl Into<String>) -> Self {
        Step {
            id,
            title: title.into(),
            body: body.into(),
            marks: None,
            when: None,
        }
    }

    pub fn marks(mut self, flag: &'static str) -> Self {
        self.marks = Some(flag);
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
    /// Shell variable assignments the steps use (already quoted).
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

/// Helpers every runner has: journal, fencing, the gate, container lookup.
const RUNNER_FUNCTIONS: &str = r#"
stamp() { date -u '+%Y-%m-%dT%H:%M:%SZ	%s%3N'; }
journal() { printf '%s\t%s\t%s\t%s\n' "$(stamp)" "$1" "${2:-}" "${3:-}" >> "$J"; }
json_escape() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n\t' '  '; }
fenced() {
    lock_mine "$TOKEN" || { journal note "lost the host lock: stopping"; return 1; }
    if [ "$1" = forward ] && [ -e "$O/abort" ]; then journal note "interrupted by the operator"; return 1; fi
}
run_step() { # forward|back ID FLAG TITLE
    fenced "$1" || return 1
    [ -n "$3" ] && eval "$3=1"
    journal start "$2" "$4"
    if [ -n "${CTOPS_STEP_DELAY:-}" ]; then sleep "$CTOPS_STEP_DELAY"; fi
    # Each step's output goes to its own log and to output.log, which `-v` streams.
    # (fd 8, the operations lock, stays with the runner: nothing a step leaves behind holds it.)
    { ( "s_$2" ) 8<&-; echo $? > "$O/$2.rc"; } 2>&1 | tee "$O/$2.log" >> "$O/output.log"
    rc=$(cat "$O/$2.rc" 2>/dev/null || echo 1)
    if [ "${CTOPS_FAIL_STEP:-}" = "$2" ]; then echo "injected failure (CTOPS_FAIL_STEP)" >> "$O/$2.log"; rc=99; fi
    if [ $rc -eq 0 ]; then journal ok "$2"; else journal fail "$2" "exit $rc: $(tail -n 12 "$O/$2.log" | tr '\t' ' ' | sed ':a;N;$!ba;s/\n/ | /g')"; fi
    return $rc
}
container_of() { docker ps -q --filter "label=com.docker.compose.project=$P" --filter "label=com.docker.compose.service=$1" | head -n 1; }
stack_state() {
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$P" --filter label=com.docker.compose.oneoff=False)
    [ -n "$ids" ] && docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.RestartCount}} {{.Id}}' $ids | sort
}
gate() { # EXPECTED_VERSION: health_url 2xx (reporting it), then every service up and stable
    end=$(( $(date +%s) + HEALTH_TIMEOUT ))
    want=$(printf '%s' "$1" | sed 's/[.]/\\./g')
    while :; do
        if body=$(curl -fsS -m 5 "$HEALTH_URL" 2>&1); then
            if [ -z "$1" ] || ! printf '%s' "$body" | grep -q '"version"' ||
               printf '%s' "$body" | grep -Eq "\"version\"[[:space:]]*:[[:space:]]*\"$want\""; then break; fi
            last="health_url answers, but not version $1: $body"
        else last="health_url: $body"; fi
        if [ "$(date +%s)" -ge "$end" ]; then echo "$last"; return 1; fi
        sleep "$HEALTH_INTERVAL"
    done
    echo "health_url ok: $body"
    first=$(stack_state)
    end=$(( $(date +%s) + STABLE_FOR ))
    now_state=$first
    while :; do
        down=$(printf '%s\n' "$now_state" | awk '$2 != "running" {print $1 " " $2}')
        if [ -n "$down" ]; then
            echo "not running: $down"
            for svc in $(printf '%s\n' "$down" | awk '{print $1}'); do
                cid=$(docker ps -aq --filter "label=com.docker.compose.project=$P" --filter "label=com.docker.compose.service=$svc" | head -n 1)
                [ -n "$cid" ] && { echo "--- last lines of $svc:"; docker logs --tail 5 "$cid" 2>&1; }
            done
            return 1
        fi
        if [ "$now_state" != "$first" ]; then
            echo "restarted while the gate watched (stable_for):"; printf '%s\n' "$now_state" | awk '{print $1 " restarts " $3}'
            for svc in $(printf '%s\n%s\n' "$first" "$now_state" | sort | uniq -u | awk '{print $1}' | sort -u); do
                echo "--- last lines of $svc:"; docker logs --tail 5 "$(container_of "$svc")" 2>&1
            done
            return 1
        fi
        [ "$(date +%s)" -ge "$end" ] && break
        sleep 1
        now_state=$(stack_state)
    done
    echo "every service stayed up for ${STABLE_FOR}s"
}
keep_image() { # SERVICE IMAGE TAG: tag the image the service runs now (or IMAGE:latest)
    cid=$(container_of "$1"); img=""
    [ -n "$cid" ] && img=$(docker inspect -f '{{.Image}}' "$cid")
    docker tag "${img:-$2:latest}" "$2:$3"
}
"#;

impl Plan {
    /// The script that runs on the host.
    pub fn render(&self, state_dir: &str, token: &str) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "#!/bin/sh\n# ctops runner: {}\n# op {}\nset -u\n",
            self.describe, self.op_id
        ));
        s.push_str(&format!(
            "D={}\nOP={}\nTOKEN={}\n",
            quote(state_dir),
            quote(&self.op_id),
            quote(token)
        ));
        s.push_str("O=\"$D/ops/$OP\"\nJ=\"$O/journal\"\n");
        for (name, value) in &self.vars {
            s.push_str(&format!("{name}={value}\n"));
        }
        s.push_str(LOCK_FUNCTIONS);
        s.push_str(RUNNER_FUNCTIONS);
        let flags: Vec<&str> = self.forward.iter().filter_map(|st| st.marks).collect();
        let mut every_flag: Vec<&str> = flags
            .iter()
            .copied()
            .chain(self.back.iter().filter_map(|st| st.when))
            .collect();
        every_flag.sort();
        every_flag.dedup();
        for flag in &every_flag {
            s.push_str(&format!("{flag}=0\n"));
        }
        for step in self.forward.iter().chain(&self.back) {
            s.push_str(&format!("s_{}() {{\n{}\n}}\n", step.id, indent(&step.body)));
        }
        s.push_str("forward() {\n");
        for step in &self.forward {
            s.push_str(&format!(
                "    run_step forward {} {} {} || return 1\n",
                step.id,
                quote(step.marks.unwrap_or("")),
                quote(&step.title)
            ));
        }
        s.push_str("}\nback() {\n    failed=0\n");
        for step in &self.back {
            let cond = step
                .when
                .map(|f| format!("[ \"${f}\" = 1 ] && "))
                .unwrap_or_default();
            s.push_str(&format!(
                "    {cond}{{ run_step back {} '' {} || failed=1; }}\n",
                step.id,
                quote(&step.title)
            ));
        }
        s.push_str("    return $failed\n}\n");
        let release = self.release_fields.as_deref().unwrap_or("");
        s.push_str(&format!(
            r#"record() {{ # OUTCOME
    at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    {release_line}
    printf '{{"at":"%s","result":"%s",%s}}\n' "$at" "$1" {audit} >> "$D/audit.jsonl"
}}
( while sleep {renew}; do lock_renew "$TOKEN" {lease} || exit 0; done ) >/dev/null 2>&1 &
renewer=$!
printf '%s' "$OP" > "$D/last"
{seed}journal begin {op} {describe}
# Backups hold this shared while they dump: wait for them, then keep them out until the end.
{{ [ -e "$D/ops.flock" ] || : >>"$D/ops.flock"; }} && exec 8<"$D/ops.flock"
flock -x -n 8 || {{ journal note "waiting for a backup to finish"; flock -x 8; }}
if forward; then outcome={success}
elif [ "${first_flag}" = 0 ]; then outcome=failed
elif back; then outcome=rolled-back
else outcome=rollback-failed
fi
record "$outcome"
kill "$renewer" 2>/dev/null
lock_release "$TOKEN"
# Last: whoever reads `end` finds the release recorded and the lock free.
journal end "$outcome"
"#,
            release_line = if release.is_empty() {
                String::new()
            } else {
                format!(
                    "[ \"$1\" = {success} ] && printf '{{\"at\":\"%s\",\"result\":\"%s\",%s}}\\n' \"$at\" \"$1\" {fields} >> \"$D/releases.jsonl\"",
                    success = quote(self.success),
                    fields = quote(release)
                )
            },
            audit = quote(&self.audit_fields),
            renew = RENEW_EVERY.as_secs(),
            lease = LEASE.as_secs(),
            op = quote(self.op),
            describe = quote(&self.describe),
            success = quote(self.success),
            first_flag = flags.first().copied().unwrap_or("CHANGED"),
            seed = match &self.seed_release {
                Some(fields) => format!(
                    "[ -s \"$D/releases.jsonl\" ] || printf '{{\"at\":\"%s\",\"result\":\"found\",%s}}\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {} >> \"$D/releases.jsonl\"\n",
                    quote(fields)
                ),
                None => String::new(),
            },
        ));
        s
    }
}

fn indent(body: &str) -> String {
    body.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Uploads the script over stdin (atomically), starts it detached, returns its pid.
pub async fn start(
    remote: &Remote,
    state_dir: &str,
    op_id: &str,
    script: &str,
) -> Result<u32, Error> {
    const START: &str = r#"O="$1/ops/$2"; mkdir -p "$O" || exit 1
cat > "$O/script.sh.tmp" && mv -f "$O/script.sh.tmp" "$O/script.sh" || exit 1
setsid nohup sh "$O/script.sh" </dev/null >"$O/runner.log" 2>&1 &
echo $! | tee "$O/pid""#;
    // Test hooks, passed to the runner: widen each step's window (CTOPS_STEP_DELAY) or make
    // one step fail after it ran (CTOPS_FAIL_STEP), for fault injection.
    let hooks: String = ["CTOPS_STEP_DELAY", "CTOPS_FAIL_STEP"]
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .map(|v| format!("{k}={}; export {k}; ", quote(&v)))
        })
        .collect();
    let cmd = RemoteCommand::sh(&format!("{hooks}{START}"), [state_dir, op_id]);
    let out = remote.run_with_input(&cmd, Some(script.as_bytes())).await?;
    if out.status != 0 {
        return Err(remote.exited(&cmd, out.status, &out.stderr));
    }
    out.stdout_text().trim().parse().map_err(|_| {
        Error::failed(format!(
            "the runner did not start on {}: {}",
            remote.host(),
            out.stderr_text().trim()
        ))
    })
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
                .stream(&tail("output.log"), &mut tokio::io::stderr(), None)
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
            if let Some(event) = Event::parse(&line) {
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
}

const LAST_SCRIPT: &str = r#"D=$1; [ -f "$D/last" ] || exit 0
op=$(cat "$D/last"); O="$D/ops/$op"
echo "$op"
if [ -f "$O/pid" ] && kill -0 "$(cat "$O/pid")" 2>/dev/null; then echo running; else echo stopped; fi
if [ -f "$O/seen" ]; then echo seen; else echo unseen; fi
cat "$O/journal" 2>/dev/null"#;

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
            .filter(|e| e.kind != "begin" && e.kind != "end")
            .collect(),
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

    fn plan(fail_at: Option<&'static str>, back_fails: bool) -> Plan {
        let step = |id: &'static str| {
            let body = if Some(id) == fail_at {
                "echo broken >&2; exit 3".to_string()
            } else {
                format!("echo {id} >> \"$O/trail\"")
            };
            Step::shell(id, format!("step {id}"), body)
        };
        Plan {
            op: "deploy",
            op_id: "op1".into(),
            describe: "deploy 'x' (test)".into(),
            vars: vec![],
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
                        "exit 1"
                    } else {
                        "echo downgrade >> \"$O/trail\""
                    },
                )
                .when("MIGRATING"),
                Step::shell(
                    "checkout_back",
                    "undo checkout",
                    "echo checkout_back >> \"$O/trail\"",
                )
                .when("CHANGED"),
            ],
            success: "deployed",
            release_fields: Some(r#""ref":"v1","commit":"abc""#.into()),
            audit_fields: r#""command":"deploy""#.into(),
            seed_release: Some(r#""ref":"v0","commit":"old""#.into()),
        }
    }

    /// Runs a rendered plan with a real shell in a temporary state dir, holding the lock.
    fn run(plan: &Plan) -> (tempfile::TempDir, Vec<Event>, String) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        std::fs::create_dir_all(dir.path().join("ops/op1")).unwrap();
        std::fs::write(dir.path().join("lock"), "token=tok\nexpires=99999999999\n").unwrap();
        let script = plan.render(d, "tok");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let journal = std::fs::read_to_string(dir.path().join("ops/op1/journal")).unwrap();
        let trail = std::fs::read_to_string(dir.path().join("ops/op1/trail")).unwrap_or_default();
        (
            dir,
            journal.lines().filter_map(Event::parse).collect(),
            trail,
        )
    }

    fn outcome(events: &[Event]) -> String {
        events
            .iter()
            .find(|e| e.kind == "end")
            .unwrap()
            .step
            .clone()
    }

    #[test]
    fn a_plan_that_succeeds_records_the_release_and_frees_the_lock() {
        let (dir, events, trail) = run(&plan(None, false));
        assert_eq!(outcome(&events), "deployed");
        assert_eq!(trail, "checkout\nmigrate\ngate\n");
        let releases = std::fs::read_to_string(dir.path().join("releases.jsonl")).unwrap();
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
        assert!(!dir.path().join("lock").exists());
        assert!(events
            .iter()
            .any(|e| e.kind == "begin" && e.detail == "deploy 'x' (test)"));
    }

    #[test]
    fn a_failed_step_undoes_exactly_what_started() {
        let (_dir, events, trail) = run(&plan(Some("migrate"), false));
        assert_eq!(outcome(&events), "rolled-back");
        assert_eq!(trail, "checkout\ndowngrade\ncheckout_back\n");
        let fail = events.iter().find(|e| e.kind == "fail").unwrap();
        assert_eq!(fail.step, "migrate");
        assert!(
            fail.detail.contains("exit 3") && fail.detail.contains("broken"),
            "{fail:?}"
        );

        let (_dir, events, trail) = run(&plan(Some("checkout"), false));
        assert_eq!(outcome(&events), "rolled-back");
        assert_eq!(trail, "checkout_back\n");
    }

    #[test]
    fn a_failed_undo_is_reported_as_such() {
        let (dir, events, _) = run(&plan(Some("gate"), true));
        assert_eq!(outcome(&events), "rollback-failed");
        let releases = std::fs::read_to_string(dir.path().join("releases.jsonl")).unwrap();
        assert!(
            !releases.contains("deployed"),
            "only a success is a release: {releases}"
        );
        let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert!(audit.contains(r#""result":"rollback-failed""#));
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
}
