//! `logs`: exact tails, live follow, a clean end on Ctrl-C and on a closed pipe.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use crate::util::*;

/// Writes a line into the bot's log as if the bot had printed it.
fn write_to_bot_log(line: &str) {
    host(&format!(
        "docker exec {} sh -c 'echo {line} > /proc/1/fd/1'",
        container("bot")
    ));
}

#[test]
fn logs_prints_the_last_n_lines_exactly() {
    let _lock = exclusive();
    let bot = container("bot");
    for i in 0..8 {
        write_to_bot_log(&format!("sentinel-tail-{i}"));
    }
    host(&format!("docker pause {bot}"));
    let _restore = Restore(vec![format!("docker unpause {bot}")]);
    let run = sandbox_ctops(["logs", "bot", "--tail", "7"])
        .run()
        .expect(0);
    let expected = host(&format!("docker logs --tail 7 {bot} 2>&1"));
    assert_eq!(run.stdout(), expected, "{}", run.describe());
    assert!(run.stdout().contains("sentinel-tail-7"));
    assert_eq!(run.stdout().lines().count(), 7);

    let run = sandbox_ctops(["logs", "bot", "--tail", "3", "--json"])
        .run()
        .expect(0);
    let docs: Vec<serde_json::Value> = run
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 3);
    for doc in &docs {
        assert_schema("logs.json", doc);
    }
    assert_eq!(docs[2]["line"], expected.lines().last().unwrap());
}

#[test]
fn follow_shows_new_lines_and_ends_cleanly_on_sigint() {
    let _lock = shared();
    let control = private_tempdir();
    let (mut child, _home) = sandbox_ctops(["logs", "bot", "-f", "--tail", "0"])
        .env("CTOPS_CONTROL_DIR", control.path())
        .spawn();
    let pid = child.id();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let sentinel = format!("sentinel-follow-{pid}");
    // The bot writes every second; once a line arrives the stream is live.
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    write_to_bot_log(&sentinel);
    let started = Instant::now();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        if line.contains(&sentinel) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sentinel never arrived"
        );
    }
    host(&format!("kill -INT {pid}"));
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "SIGINT took {:?}",
        started.elapsed()
    );
    assert!(matches!(status.code(), Some(0) | Some(130)), "{status:?}");
    let needle = control.path().display().to_string();
    wait_until(
        "no ssh process on the operator side",
        Duration::from_secs(3),
        || processes_matching(&needle).is_empty(),
    );
    wait_until(
        "no `logs --follow` left on the host",
        Duration::from_secs(3),
        || processes_matching("logs --no-color --no-log-prefix --tail 0 --follow bot").is_empty(),
    );
}

#[test]
fn a_closed_pipe_ends_logs_quietly() {
    let _lock = shared();
    let bin = env!("CARGO_BIN_EXE_ctops");
    let script = format!("set -o pipefail; {bin} logs bot -f | head -1");
    let started = Instant::now();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("CTOPS_CONFIG", sandbox_config())
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn several_services_are_prefixed() {
    let _lock = shared();
    let run = sandbox_ctops(["logs", "bot", "api", "--tail", "2", "--json"])
        .run()
        .expect(0);
    let services: Vec<String> = run
        .stdout()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["service"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(services.iter().any(|s| s == "bot"), "{}", run.describe());
}

#[test]
fn follow_goes_on_across_a_recreate_of_the_service() {
    let _lock = exclusive();
    let (mut child, _home) = sandbox_ctops(["logs", "bot", "-f", "--tail", "0"]).spawn();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let before = container("bot");
    host(&format!(
        "runuser -u deploy -- sh -c 'cd \"{CHECKOUT}\" && docker compose -f infrastructure/docker-compose.yml up -d --force-recreate bot' >/dev/null 2>&1"
    ));
    let after = container("bot");
    assert_ne!(before, after, "the bot container was recreated");
    let sentinel = format!("sentinel-recreate-{}", child.id());
    write_to_bot_log(&sentinel);
    let started = Instant::now();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended at the recreate"
        );
        if line.contains(&sentinel) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no line from the new container"
        );
    }
    host(&format!("kill -INT {}", child.id()));
    child.wait().unwrap();
    wait_healthy();
}
