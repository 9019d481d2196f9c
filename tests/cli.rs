//! Config and command-line errors: exit 2 naming the key and line, before any connection.

use crate::util::*;

fn with_config(text: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctops.toml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    ctops(all).run()
}

#[test]
fn unknown_key_is_refused_with_key_and_line() {
    let run = with_config(
        "[targets.a]\nssh = \"h\"\nhealth_ulr = \"x\"\n",
        &["status"],
    )
    .expect(2);
    assert!(
        run.stderr().contains("health_ulr") && run.stderr().contains("line 3"),
        "{}",
        run.describe()
    );
}

#[test]
fn wrong_type_is_refused_with_key_and_line() {
    let run = with_config(
        "[targets.a]\nssh = \"h\"\n\n[timeouts]\nconnect = 5\n",
        &["health"],
    )
    .expect(2);
    assert!(
        run.stderr().contains("line 5") && run.stderr().contains("connect"),
        "{}",
        run.describe()
    );
}

#[test]
fn missing_target_is_refused_naming_it() {
    let run = with_config(
        "[targets.a]\nssh = \"h\"\n",
        &["status", "--target", "staging"],
    )
    .expect(2);
    assert!(
        run.stderr().contains("`staging`") && run.stderr().contains("help: defined targets: a"),
        "{}",
        run.describe()
    );
    let run = with_config(
        "default_target = \"prod\"\n[targets.a]\nssh = \"h\"\n",
        &["status"],
    )
    .expect(2);
    assert!(run.stderr().contains("line 1"), "{}", run.describe());
}

#[test]
fn config_errors_have_a_json_document() {
    let run = with_config("[targets.a]\nssh = 1\n", &["status", "--json"]).expect(2);
    let doc = run.json();
    assert_schema("error.json", &doc);
    assert_eq!(doc["error"]["kind"], "usage");
}

#[test]
fn no_config_anywhere_is_a_usage_error() {
    let run = ctops(["status"]).run().expect(2);
    assert!(
        run.stderr().contains("no config file found"),
        "{}",
        run.describe()
    );
}

#[test]
fn config_check_prints_the_resolved_target() {
    let production = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ctops.toml");
    let run = ctops(["--config", production, "config", "check"])
        .run()
        .expect(0);
    assert!(
        run.stdout().contains("ssh = \"trader-psy\""),
        "{}",
        run.describe()
    );
    assert!(run
        .stdout()
        .contains("health_url = \"https://api.calmtrader.ai/health\""));
    let run = ctops(["--config", production, "config", "check", "--json"])
        .run()
        .expect(0);
    let doc = run.json();
    assert_schema("config-check.json", &doc);
    assert_eq!(doc["config"]["backup_dir"], "/opt/backups");
}

#[test]
fn config_is_found_in_the_working_directory_with_a_warning_for_ssh_config() {
    let c = ctops(["config", "check"]);
    std::fs::create_dir(c.home().join("config")).unwrap();
    std::fs::write(
        c.home().join("config/ctops.toml"),
        "[targets.a]\nssh = \"h\"\nssh_config = \"my_ssh\"\n",
    )
    .unwrap();
    let home = c.home().to_path_buf();
    let run = c.run().expect(0);
    assert!(
        run.stderr().contains("warning:") && run.stderr().contains("ProxyCommand"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout()
            .contains(&home.join("config/my_ssh").display().to_string()),
        "{}",
        run.describe()
    );
}

#[test]
fn completions_and_man_page_are_generated() {
    let run = ctops(["completions", "bash"]).run().expect(0);
    assert!(run.stdout().contains("ctops") && run.stdout().contains("health"));
    let run = ctops(["man"]).run().expect(0);
    assert!(run.stdout().contains(".TH ctops"), "{}", run.describe());
}

#[test]
fn bad_flags_are_usage_errors() {
    ctops(["logs", "--tail", "many"]).run().expect(2);
    ctops(["frobnicate"]).run().expect(2);
}

/// A backup name, an `.env` key or an assignment the arguments alone show to be wrong is
/// refused (exit 2) before anything reaches the host: the target here cannot be reached
/// (port 1 on loopback, refused), so a connection first would be exit 3.
#[test]
fn hostile_names_and_keys_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let ssh_config = dir.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        "Host nowhere\n  HostName 127.0.0.1\n  Port 1\n",
    )
    .unwrap();
    let config = format!(
        "[targets.t]\nssh = \"nowhere\"\nssh_config = {:?}\ndir = \"/srv/x\"\n",
        ssh_config.display().to_string()
    );
    // The control: a command with good arguments does try to connect.
    let reached = with_config(&config, &["env", "unset", "GOOD_KEY"]);
    assert_eq!(reached.code(), 3, "{}", reached.describe());
    for args in [
        &["restore", "db", "../../etc/passwd"][..],
        &["restore", "db", "db_20260101.sql"],
        &["restore", "db", "db-20260101T000000Z.dump", "--unverified"],
        &["restore", "env", "../x"],
        &["backup", "verify", "db-x\nrm"],
        &["env", "set", "BAD-KEY=1"],
        &["env", "set", "NO_EQUALS_SIGN"],
        &["env", "unset", "1BAD"],
        &["env", "get", "a b"],
        &["env", "diff", "/etc/shadow"],
        &["rotate", "bad/key"],
    ] {
        let run = with_config(&config, args);
        assert_eq!(run.code(), 2, "{args:?}: {}", run.describe());
        assert!(
            run.stderr().starts_with("error: "),
            "{args:?}: {}",
            run.describe()
        );
    }
}

/// `ctops ARGS` (sandbox config) with stdout a pipe whose read end is already closed: every
/// write to it fails with EPIPE.
fn into_a_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let home = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctops"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .env("CTOPS_CONFIG", sandbox_config())
        .current_dir(home.path())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_read_only_command_ends_quietly_on_a_closed_pipe() {
    let _guard = shared();
    let commands: &[&[&str]] = &[
        &["completions", "bash"],
        &["completions", "zsh"],
        &["man"],
        &["--help"],
        &["config", "check"],
        &["health"],
        &["health", "--watch", "1s"],
        &["status"],
        &["stats"],
        &["disk"],
        &["logs", "api", "--tail", "20"],
        &["releases"],
        &["backup", "list"],
        &["env", "list"],
        &["env", "get", "POSTGRES_USER"],
        &["env", "diff"],
        &["lock", "status"],
        &["doctor"],
        &["access", "list"],
        &["preflight"],
    ];
    for args in commands {
        for json in [false, true] {
            let mut all = args.to_vec();
            if json {
                all.push("--json");
            }
            let (code, stderr) = into_a_closed_pipe(&all);
            assert!(
                code != Some(101) && !stderr.contains("panicked"),
                "ctops {all:?} into a closed pipe: exit {code:?}\n{stderr}"
            );
        }
    }
}

/// With stderr (where `-v`, status lines and warnings go) a closed pipe, as in
/// `ctops restart bot -v 2>&1 | head -1`: ctops does its work and ends as it would have,
/// without a panic half-way.
#[test]
fn a_closed_stderr_stops_nothing_half_way() {
    let _guard = exclusive();
    for args in [
        &["status", "-v"][..],
        &["health", "-v"],
        &["restart", "bot", "-v"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let home = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctops"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("CTOPS_CONFIG", sandbox_config())
            .current_dir(home.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(out.code(), Some(0), "ctops {args:?} with stderr closed");
    }
    wait_healthy();
}
