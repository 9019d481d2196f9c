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

    let run = sandbox_ctops(["rotate", "POSTGRES_PASSWORD", "--generate", "--yes", "-vv"])
        .env("CTOPS_LOG", "ctops=trace")
        .run();
    assert_eq!(run.code(), 0, "{}", run.describe());
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
    ] {
        assert!(!text.contains(&new), "the new value is in {place}");
        assert!(!text.contains(&old), "the old value is in {place}");
    }
    assert!(audit.contains("rotate POSTGRES_PASSWORD"), "{audit}");
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

#[test]
fn a_revoked_on_rotate_secret_keeps_its_new_value_when_the_gate_fails() {
    let _guard = exclusive();
    reset_host();
    let old = env_value("TELEGRAM_BOT_TOKEN");
    let run = sandbox_ctops([
        "rotate",
        "TELEGRAM_BOT_TOKEN",
        "--generate",
        "--yes",
        "--json",
    ])
    .env("CTOPS_FAIL_STEP", "gate")
    .run();
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("the new value stays"),
        "{}",
        run.describe()
    );
    assert_schema("env-change.json", &run.json());
    let new = env_value("TELEGRAM_BOT_TOKEN");
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
    assert!(!run.stdout().contains(&new) && !run.stderr().contains(&new));
    reset_host();
}
