//! `rotate` against the sandbox's real PostgreSQL role, `.env` and services.

use crate::util::*;

fn env_text() -> String {
    std::fs::read_to_string(format!("{CHECKOUT}/infrastructure/.env")).unwrap()
}

fn env_value(key: &str) -> String {
    env_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap()
        .to_string()
}

/// A password login over TCP from this machine, as the api makes one.
fn tcp_login(password: &str) -> bool {
    std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            "15432",
            "-U",
            "trader",
            "-d",
            "trader_psy",
            "-w",
            "-c",
            "SELECT 1",
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Witnesses on the host for one rotation: PATH shims for `docker`, `psql` and `sh` in the
/// deploy account's sessions that log each call's argv and environment, the PostgreSQL
/// server logging every statement, and a sampler of every process's argv on the machine.
/// Dropping it takes the shims and the setting away, however the test ends.
struct Witnesses {
    dir: tempfile::TempDir,
    since: String,
    sampler: Option<std::thread::JoinHandle<String>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const SHIMMED: [&str; 3] = ["docker", "psql", "sh"];
const BASHRC: &str = "/home/deploy/.bashrc";
const SHIM_LINE: &str = "export PATH=";

impl Witnesses {
    fn start() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("ctops-shims")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = dir.path().join("calls.log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        for name in SHIMMED {
            let real = host(&format!("command -v {name}")).trim().to_string();
            let shim = dir.path().join(name);
            std::fs::write(
                &shim,
                format!(
                    "#!/bin/sh\n{{ printf 'argv: {name}'; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; echo; env | sed 's/^/env: /'; }} >>{log} 2>/dev/null\nexec {real} \"$@\"\n",
                    log = log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // bash reads ~/.bashrc for commands that sshd runs: the shims come first on PATH there.
        let bashrc = std::fs::read_to_string(BASHRC).unwrap();
        std::fs::write(
            BASHRC,
            format!("{SHIM_LINE}{}:$PATH\n{bashrc}", dir.path().display()),
        )
        .unwrap();
        host("docker exec -i $(docker ps -q --filter label=com.docker.compose.service=postgres) psql -X -q -U trader -d postgres -c \"ALTER SYSTEM SET log_statement = 'all'\" -c 'SELECT pg_reload_conf()'");
        let since = host("date -u +%Y-%m-%dT%H:%M:%S.%NZ").trim().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(argv) = std::fs::read(entry.path().join("cmdline")) {
                        seen.insert(String::from_utf8_lossy(&argv).replace('\0', " "));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            seen.into_iter().collect::<Vec<_>>().join("\n")
        });
        Witnesses {
            dir,
            since,
            sampler: Some(sampler),
            stop,
        }
    }

    /// (the shims' log, the server log since the start, every argv sampled)
    fn collect(mut self) -> (String, String, String) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let argv = self.sampler.take().unwrap().join().unwrap();
        let calls = std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap();
        let server = host(&format!(
            "docker logs --since {} $(docker ps -q --filter label=com.docker.compose.service=postgres) 2>&1",
            self.since
        ));
        (calls, server, argv)
    }
}

impl Drop for Witnesses {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(text) = std::fs::read_to_string(BASHRC) {
            let kept: String = text
                .lines()
                .filter(|l| !(l.starts_with(SHIM_LINE) && l.contains("ctops-shims")))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(BASHRC, kept);
        }
        host_ok("docker exec -i $(docker ps -q --filter label=com.docker.compose.service=postgres) psql -X -q -U trader -d postgres -c 'ALTER SYSTEM RESET log_statement' -c 'SELECT pg_reload_conf()'");
    }
}

fn api_database_ok() -> bool {
    host_ok("curl -sf -m 4 http://127.0.0.1:18000/health | grep -q '\"database\": true'")
}

#[test]
fn rotate_postgres_password_changes_the_role_env_and_services_and_shows_nothing() {
    let _guard = exclusive();
    reset_host();
    let old = env_value("POSTGRES_PASSWORD");
    assert!(tcp_login(&old));

    // Without a TTY and without --yes: refused, nothing changed.
    let before = env_text();
    sandbox_ctops(["rotate", "POSTGRES_PASSWORD", "--generate"])
        .run()
        .expect(4);
    assert_eq!(env_text(), before);
    assert!(tcp_login(&old));

    let witnesses = Witnesses::start();
    let run = sandbox_ctops(["rotate", "POSTGRES_PASSWORD", "--generate", "--yes", "-vv"])
        .env("CTOPS_LOG", "ctops=trace")
        .run();
    let (calls, server_log, argv) = witnesses.collect();
    assert_eq!(run.code(), 0, "{}", run.describe());
    // The witnesses saw the rotation: the shims ran (compose recreated the services), the
    // server logged the statements around it (log_statement = all works), the sampler saw
    // the compose calls. The ALTER ROLE itself is not logged: ctops turns statement logging
    // off for that session, so no verifier (as good as the password to an offline guesser)
    // reaches the log.
    assert!(
        calls.contains("argv: docker [compose]") && calls.contains("[up]"),
        "{calls}"
    );
    assert!(calls.contains("argv: sh [-c]"), "{calls}");
    assert!(
        server_log.contains("statement: SELECT 'logged-in'"),
        "{server_log}"
    );
    assert!(
        !server_log.contains("ALTER ROLE") && !server_log.contains("SCRAM-SHA-256$"),
        "{server_log}"
    );
    assert!(argv.contains("compose"), "{argv}");
    let new = env_value("POSTGRES_PASSWORD");
    assert_ne!(new, old);
    assert!(new.len() >= 32 && new.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(
        env_value("DATABASE_URL").contains(&format!(":{new}@")),
        "DATABASE_URL updated"
    );
    assert!(!env_text().contains(&old));
    assert!(tcp_login(&new), "the new password logs in over TCP");
    assert!(!tcp_login(&old), "the old password is refused");
    assert!(
        api_database_ok(),
        "the api reaches the database with the new password"
    );
    let audit = host("cat '/srv/ctops sandbox/state/audit.jsonl'");
    let journals = host("cat '/srv/ctops sandbox/state'/ops/*/journal '/srv/ctops sandbox/state'/ops/*/*.log 2>/dev/null || true");
    for (place, text) in [
        ("stdout", run.stdout()),
        ("stderr (tracing at trace level)", run.stderr()),
        ("the audit log", audit.clone()),
        ("the journals and step logs", journals),
        (
            "the argv and environment of docker, psql and sh on the host",
            calls,
        ),
        (
            "the PostgreSQL server log with log_statement=all",
            server_log,
        ),
        ("the argv of the processes on the host", argv),
    ] {
        assert!(!text.contains(&new), "the new value is in {place}");
        assert!(!text.contains(&old), "the old value is in {place}");
    }
    assert!(audit.contains("rotate POSTGRES_PASSWORD"), "{audit}");
    // The verifiers (as good as the passwords to an offline guesser) are in no script kept on
    // the host, and their private files are gone.
    let scripts = host("cat '/srv/ctops sandbox/state'/ops/*/script.sh");
    assert!(!scripts.contains("SCRAM-SHA-256$"), "{scripts}");
    let left = host("ls '/srv/ctops sandbox/state'");
    assert!(!left.contains("password.sql"), "{left}");
}

#[test]
fn rotate_dry_run_shows_no_verifier_and_no_password() {
    let _guard = exclusive();
    reset_host();
    let old = env_value("POSTGRES_PASSWORD");
    let before = env_text();
    let run = sandbox_ctops(["rotate", "POSTGRES_PASSWORD", "--generate", "--dry-run"])
        .run()
        .expect(0);
    let shown = format!("{}{}", run.stdout(), run.stderr());
    assert!(shown.contains("alter_role"), "the plan is shown: {shown}");
    assert!(
        !shown.contains("SCRAM-SHA-256$"),
        "a verifier is shown: {shown}"
    );
    assert!(!shown.contains(&old), "the old password is shown");
    assert_eq!(env_text(), before);
}

#[test]
fn rotate_that_fails_its_gate_puts_the_old_password_back_everywhere() {
    let _guard = exclusive();
    reset_host();
    let old = env_value("POSTGRES_PASSWORD");
    let before = env_text();
    let run = sandbox_ctops(["rotate", "POSTGRES_PASSWORD", "--generate", "--yes"])
        .env("CTOPS_FAIL_STEP", "gate")
        .run();
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert_eq!(env_text(), before, ".env is back byte for byte");
    assert!(tcp_login(&old), "the role takes the old password again");
    wait_healthy();
    assert!(api_database_ok());
}

#[test]
fn rotate_reads_the_new_value_from_stdin_and_updates_every_key_holding_the_old() {
    let _guard = exclusive();
    reset_host();
    let new = "Rotated4StdinTest0123456789abcd";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ctops"))
        .args(["rotate", "POSTGRES_PASSWORD", "--from-stdin", "--yes"])
        .env("CTOPS_CONFIG", sandbox_config())
        .env("HOME", sandbox())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{new}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(new));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(new));
    assert_eq!(env_value("POSTGRES_PASSWORD"), new);
    assert!(tcp_login(new));
    reset_host();
}

/// `ctops ARGS` with `value` and a newline on stdin (a pipe, no TTY).
fn with_stdin(args: &[&str], value: &str, fail_step: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ctops"));
    cmd.args(args)
        .env("CTOPS_CONFIG", sandbox_config())
        .env("HOME", sandbox())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(step) = fail_step {
        cmd.env("CTOPS_FAIL_STEP", step);
    }
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let _ = writeln!(child.stdin.take().unwrap(), "{value}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn rotate_generate_is_refused_for_a_token_its_issuer_revokes() {
    let _guard = shared();
    let before = env_text();
    let run = sandbox_ctops(["rotate", "TELEGRAM_BOT_TOKEN", "--generate", "--yes"])
        .run()
        .expect(2);
    assert!(
        run.stderr().contains("BotFather") && run.stderr().contains("--from-stdin"),
        "{}",
        run.describe()
    );
    assert_eq!(env_text(), before, ".env untouched");
    // --from-stdin without a TTY needs --yes, and says so.
    let out = with_stdin(
        &["rotate", "TELEGRAM_BOT_TOKEN", "--from-stdin"],
        "123456:NoTtyNoYesToken",
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert_eq!(env_text(), before, ".env untouched");
}

#[test]
fn a_revoked_on_rotate_secret_keeps_its_new_value_when_the_gate_fails() {
    let _guard = exclusive();
    reset_host();
    let old = env_value("TELEGRAM_BOT_TOKEN");
    let pasted = "7654321:AAFromBotFatherForTheGateTest";
    let out = with_stdin(
        &[
            "rotate",
            "TELEGRAM_BOT_TOKEN",
            "--from-stdin",
            "--yes",
            "--json",
        ],
        pasted,
        Some("gate"),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("the new value stays"), "{stderr}");
    assert_schema(
        "env-change.json",
        &serde_json::from_str(stdout.trim()).unwrap(),
    );
    let new = env_value("TELEGRAM_BOT_TOKEN");
    assert_eq!(new, pasted);
    assert_ne!(
        new, old,
        "the old token is revoked at BotFather: the new one stays"
    );
    let in_bot = host(&format!(
        "docker exec {} printenv TELEGRAM_BOT_TOKEN",
        container("bot")
    ));
    assert_eq!(
        in_bot.trim(),
        new,
        "the bot was recreated with the new token"
    );
    assert!(!stdout.contains(&new) && !stderr.contains(&new));
    reset_host();
}
