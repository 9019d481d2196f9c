//! The bad-input corpus (`tests/corpus/`, its README says the format) fed to the built
//! binary: every hostile value a user or the host supplies gives a clear error (exit 2 for
//! arguments and config, 4 for host data; stderr names the field; never a panic) or is used
//! literally, and a refused input changes nothing on the host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::*;

const PAYLOAD: &str = "/tmp/ctops-pwned";
const BASE: &str = "/srv/ctops sandbox";

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(rel)
}

/// The values of a line file: one per line, the last newline ending the last value.
fn values(rel: &str) -> Vec<String> {
    let text = std::fs::read_to_string(corpus(rel)).unwrap();
    let body = text.strip_suffix('\n').unwrap_or(&text);
    body.split('\n').map(str::to_string).collect()
}

/// A one-file case (a value holding a newline or a NUL).
fn case(name: &str) -> Vec<u8> {
    std::fs::read(corpus("cases").join(name)).unwrap()
}

fn case_text(name: &str) -> String {
    String::from_utf8(case(name)).unwrap()
}

/// The rows of an `expect.tsv` (comment lines start with `#`).
fn expectations(rel: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(corpus(rel))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// A clear refusal: the exit code, a word of the message, no panic.
fn assert_refused(run: &Run, code: i32, word: &str) {
    assert_eq!(run.code(), code, "{}", run.describe());
    let err = run.stderr();
    assert!(
        err.contains(word),
        "stderr does not name {word:?}: {}",
        run.describe()
    );
    assert!(!err.contains("panicked"), "{}", run.describe());
}

/// What a refused input must leave as it was on the sandbox host.
fn host_snapshot() -> String {
    host(&format!(
        "cd '{BASE}' && git -c safe.directory='*' -C trader-psy rev-parse HEAD && \
         sha256sum trader-psy/infrastructure/.env && ls -A backups backups/env state 2>/dev/null; \
         cat state/lock 2>/dev/null; docker ps -q --no-trunc --filter \
         'label=com.docker.compose.project.working_dir={CHECKOUT}/infrastructure' | sort; true"
    ))
}

fn assert_no_payload_ran() {
    assert!(!Path::new(PAYLOAD).exists(), "a payload ran on the host");
}

/// `ctops` with stdin from `input` (the util harness gives it /dev/null), against `config`.
fn ctops_with_stdin(
    config: &Path,
    args: &[&str],
    input: &[u8],
    extra_env: &[(&str, &str)],
) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctops"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .env("CTOPS_CONFIG", config)
        .current_dir(home.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    // Written from a thread: ctops reads stdin only once it has read `.env`.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Host folders a test planted, removed however it ends.
struct Planted(Vec<String>);

impl Drop for Planted {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A folder on the host owned by the SSH user, as ctops's own folders are.
fn plant_dir(path: &str) {
    host(&format!("install -d -o deploy -g deploy -m 2775 '{path}'"));
}

fn plant_file(path: &str, bytes: &[u8], mode: &str) {
    std::fs::write(path, bytes).unwrap();
    host(&format!(
        "chown deploy:deploy '{path}' && chmod {mode} '{path}'"
    ));
}

#[test]
fn corpus_arguments_are_refused_with_exit_2_naming_the_field_and_change_nothing() {
    let _guard = exclusive();
    let before = host_snapshot();
    let mut checked = 0;
    // Refused before connecting (the sshd counts connections) by the commands that check
    // their argument first; the others read the stack's facts or check the host's state
    // first (`crate::hostfacts`), and only the host can tell that a name is absent.
    let mut refused = |args: Vec<String>, word: &str| {
        let connections = ssh_connections();
        let run = sandbox_ctops(&args).run();
        assert_refused(&run, 2, word);
        let checks_first = word.contains("invalid")
            && matches!(
                (args[0].as_str(), args[1].as_str()),
                (
                    "logs" | "restart" | "up" | "deploy" | "rollback" | "preflight",
                    _
                ) | ("env", "get" | "diff")
            );
        if checks_first {
            assert_eq!(
                ssh_connections(),
                connections,
                "connected first: {}",
                run.describe()
            );
        }
        checked += 1;
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let mut refs = values("refs.txt");
    refs.push(case_text("ref-newline"));
    for r in &refs {
        refused(
            s(&["deploy", "--dry-run", &format!("--ref={r}")]),
            "invalid ref",
        );
        refused(
            s(&["rollback", "--dry-run", &format!("--to={r}")]),
            "invalid ref",
        );
        refused(s(&["preflight", &format!("--ref={r}")]), "invalid ref");
    }

    let mut services = values("service-names.txt");
    services.push(case_text("service-name-newline"));
    for name in &services {
        refused(s(&["logs", "--", name]), "invalid service name");
        refused(
            s(&["restart", "--dry-run", "--", name]),
            "invalid service name",
        );
        refused(s(&["up", "--dry-run", "--", name]), "invalid service name");
    }

    let mut names = values("backup-names.txt");
    names.push(case_text("backup-name-newline"));
    for name in &names {
        for command in [
            &["backup", "verify"][..],
            &["restore", "db"],
            &["restore", "env"],
            &["env", "diff"],
        ] {
            let mut args = s(command);
            args.extend(s(&["--", name]));
            refused(args, "invalid backup name");
        }
    }
    // Plain file names of the right form that name no backup.
    for name in values("backup-names-absent.txt") {
        refused(s(&["backup", "verify", "--", &name]), &name);
        refused(s(&["restore", "db", "--", &name]), &name);
        refused(s(&["restore", "env", "--", &name]), &name);
    }

    let mut keys = values("env-keys.txt");
    keys.push(case_text("env-key-newline"));
    for key in &keys {
        refused(s(&["env", "get", "--", key]), "invalid key");
        refused(s(&["env", "unset", "--", key]), "invalid key");
        refused(
            s(&["env", "set", "--", &format!("{key}=corpus")]),
            "invalid key",
        );
        refused(s(&["rotate", "--generate", "--", key]), "invalid key");
    }

    assert_no_payload_ran();
    assert_eq!(
        host_snapshot(),
        before,
        "a refused argument changed the host"
    );
    eprintln!("{checked} refused arguments");
}

/// Puts the sandbox back (`.env`, the recreated services) however the test ends.
struct ResetAfter;

impl Drop for ResetAfter {
    fn drop(&mut self) {
        reset_host();
    }
}

#[test]
fn corpus_env_values_are_used_byte_for_byte_or_refused_naming_the_key() {
    let _guard = exclusive();
    reset_host();
    let _reset = ResetAfter;
    let env_path = format!("{CHECKOUT}/infrastructure/.env");

    // Refused before anything changes: exit 2, the key named.
    let before = host_snapshot();
    let mut refused = values("env-values-refused.txt");
    refused.push(case_text("env-value-newline"));
    refused.push(case_text("env-value-cr"));
    for value in &refused {
        let run = sandbox_ctops(["env", "set", &format!("CTOPS_CORPUS_R={value}")]).run();
        assert_refused(&run, 2, "CTOPS_CORPUS_R");
    }
    // Through stdin (argv carries no NUL, and at most 128 KiB per string).
    let config = sandbox_config();
    let big = vec![b'a'; 1 << 20];
    for (input, word) in [
        (case("stdin-nul"), "NUL"),
        (case("stdin-two-lines"), "one non-empty line"),
        (case("stdin-empty"), "one non-empty line"),
        (big, "at most"),
    ] {
        let out = ctops_with_stdin(
            &config,
            &["rotate", "APP_MODE", "--from-stdin"],
            &input,
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(word) && !err.contains("panicked"),
            "{}",
            describe(&out)
        );
    }
    // Through `env edit`: the edited file is checked before it goes anywhere.
    for name in [
        "edit-nul.env",
        "edit-bad-key.env",
        "edit-not-assignment.env",
    ] {
        let editor = format!("cat '{}' >>", corpus("cases").join(name).display());
        let out = ctops_with_stdin(&config, &["env", "edit"], b"", &[("EDITOR", &editor)]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("line"),
            "{}",
            describe(&out)
        );
    }
    assert_no_payload_ran();
    assert_eq!(host_snapshot(), before, "a refused value changed the host");

    // Used literally: one `env set` of every value, then each read back by `env get` and
    // by the service that reads the file.
    let accepted = values("env-values.txt");
    let key = |i: usize| format!("CTOPS_CORPUS_{i:02}");
    let mut args: Vec<String> = vec![
        "env".into(),
        "set".into(),
        "--restart".into(),
        "api".into(),
        "--".into(),
    ];
    args.extend(
        accepted
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{}={v}", key(i))),
    );
    sandbox_ctops(&args).run().expect(0);
    let api = container("api");
    for (i, value) in accepted.iter().enumerate() {
        let got = sandbox_ctops(["env", "get", &key(i)]).run().expect(0);
        assert_eq!(
            got.output.stdout,
            format!("{value}\n").into_bytes(),
            "{}: {value:?}",
            key(i)
        );
        let seen = Command::new("docker")
            .args(["exec", &api, "printenv", &key(i)])
            .output()
            .unwrap();
        assert_eq!(
            seen.stdout,
            format!("{value}\n").into_bytes(),
            "the api sees {}: {value:?}",
            key(i)
        );
    }
    assert!(std::fs::read_to_string(&env_path)
        .unwrap()
        .contains("CTOPS_CORPUS_00="));
    assert_no_payload_ran();
    assert!(
        !host_ok(&format!("docker exec {api} test -e {PAYLOAD}")),
        "a payload ran in the api container"
    );
}

#[test]
fn corpus_configs_are_refused_with_exit_2_naming_the_key() {
    for row in expectations("config/expect.tsv") {
        let (file, code, word) = (&row[0], row[1].parse::<i32>().unwrap(), &row[2]);
        let path = corpus("config").join(file);
        let run = ctops(["--config", path.to_str().unwrap(), "config", "check"]).run();
        assert_refused(&run, code, word);
    }
    assert_no_payload_ran();
}

/// A target like the sandbox's whose `backup_dir`, `state_dir` and `env_file` are this
/// test's own, so planted host data never reaches what other tests share.
fn variant(dir: &Path, backups: &str, state: &str, env_file: &str) -> PathBuf {
    variant_config(dir, |text| {
        text.replace(
            &format!("backup_dir = \"{BASE}/backups\""),
            &format!("backup_dir = {backups:?}"),
        )
        .replace(
            &format!("state_dir = \"{BASE}/state\""),
            &format!("state_dir = {state:?}"),
        )
        .replace(
            "env_file = \"infrastructure/.env\"",
            &format!("env_file = {env_file:?}"),
        )
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Every planted file's name and checksum.
fn listing(dir: &str) -> String {
    host(&format!(
        "cd '{dir}' && find . -type f | sort | xargs -r -d '\\n' sha256sum"
    ))
}

#[test]
fn corpus_manifests_are_refused_with_exit_4_naming_the_field_and_change_nothing() {
    let _guard = exclusive();
    let pid = std::process::id();
    let backups = format!("{BASE}/corpus-backups-{pid}");
    let state = format!("{BASE}/corpus-state-{pid}");
    let _planted = Planted(vec![backups.clone(), state.clone()]);
    plant_dir(&backups);
    plant_dir(&state);
    let dir = tempfile::tempdir().unwrap();
    let config = variant(dir.path(), &backups, &state, "infrastructure/.env");
    let dump = b"corpus\n";
    let sha = sha256_hex(dump);
    let rows = expectations("manifest/expect.tsv");
    for (i, row) in rows.iter().enumerate() {
        let name = format!("db-corpus-{i:02}.dump");
        let text = std::fs::read_to_string(corpus("manifest").join(&row[0]))
            .unwrap()
            .replace("@NAME@", &name)
            .replace("@SHA256UPPER@", &sha.to_uppercase())
            .replace("@SHA256@", &sha);
        plant_file(&format!("{backups}/{name}"), dump, "0644");
        plant_file(
            &format!("{backups}/{name}.manifest.json"),
            text.as_bytes(),
            "0644",
        );
    }
    let before = (listing(&backups), host_snapshot());
    let run =
        |args: &[&str]| ctops(["--config", config.to_str().unwrap()].iter().chain(args)).run();

    // Listed as data: one valid document, no control character reaches the terminal.
    let list = run(&["backup", "list", "--json"]).expect(0);
    let doc = list.json();
    let listed = doc["backups"].as_array().unwrap();
    let pretty = rows
        .iter()
        .position(|r| r[0] == "pretty-printed.json")
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|b| b["name"] == format!("db-corpus-{pretty:02}.dump")),
        "{}",
        list.describe()
    );
    let text = run(&["backup", "list"]).expect(0);
    assert!(
        !text.stdout().contains('\u{1b}') && !text.stderr().contains('\u{1b}'),
        "{}",
        text.describe()
    );

    for (i, row) in rows.iter().enumerate() {
        let (file, code, word) = (&row[0], row[1].parse::<i32>().unwrap(), &row[2]);
        let name = format!("db-corpus-{i:02}.dump");
        if code == 0 {
            // Used as it is: read whole, the restore goes on past the manifest.
            let restore = run(&["restore", "db", &name]);
            assert!(
                restore.code() != 101 && !restore.stderr().contains("manifest"),
                "{file}: {}",
                restore.describe()
            );
            continue;
        }
        // The fourth column, when there, names the one command that reads the field.
        let commands: Vec<&[&str]> = match row.get(3).map(String::as_str) {
            Some("verify") => vec![&["backup", "verify"]],
            _ => vec![&["backup", "verify"], &["restore", "db"]],
        };
        for command in commands {
            let mut args = command.to_vec();
            args.push(&name);
            let out = run(&args);
            assert_refused(&out, code, word);
            assert!(
                !out.stderr().contains('\u{1b}'),
                "{file}: {}",
                out.describe()
            );
        }
    }
    assert_no_payload_ran();
    assert_eq!(
        (listing(&backups), host_snapshot()),
        before,
        "a refused manifest changed the host"
    );
    assert_eq!(
        host(&format!("ls -A '{state}'")).trim(),
        "",
        "no lock was left behind"
    );
}

#[test]
fn corpus_lock_files_are_judged_as_the_host_scripts_judge_them() {
    let _guard = exclusive();
    let pid = std::process::id();
    let backups = format!("{BASE}/corpus-backups-l{pid}");
    let state = format!("{BASE}/corpus-state-l{pid}");
    let _planted = Planted(vec![backups.clone(), state.clone()]);
    plant_dir(&backups);
    plant_dir(&state);
    let dir = tempfile::tempdir().unwrap();
    let config = variant(dir.path(), &backups, &state, "infrastructure/.env");
    let run =
        |args: &[&str]| ctops(["--config", config.to_str().unwrap()].iter().chain(args)).run();
    let lock = format!("{state}/lock");
    for row in expectations("lock/expect.tsv") {
        let (file, held, code, word) = (&row[0], &row[1], row[2].parse::<i32>().unwrap(), &row[3]);
        let bytes = std::fs::read(corpus("lock").join(file)).unwrap();
        plant_file(&lock, &bytes, "0664");

        let status = run(&["lock", "status", "--json"]).expect(0);
        assert_eq!(
            status.json()["held"].to_string(),
            *held,
            "{file}: {}",
            status.describe()
        );
        let text = run(&["lock", "status"]).expect(0);
        assert!(
            !text.stdout().chars().any(|c| c.is_control() && c != '\n'),
            "{file}: a control character reached the terminal: {:?}",
            text.stdout()
        );
        let up = run(&["up", "api"]);
        assert_refused(&up, code, word);
        assert!(
            !up.stderr().chars().any(|c| c.is_control() && c != '\n'),
            "{file}: {:?}",
            up.stderr()
        );
        if code != 0 {
            assert_eq!(
                std::fs::read(&lock).unwrap(),
                bytes,
                "{file}: a refused lock was changed"
            );
        } else {
            assert!(
                !Path::new(&lock).exists(),
                "{file}: taken over, then released"
            );
        }
        let _ = std::fs::remove_file(&lock);
    }
    assert_no_payload_ran();
}

#[test]
fn corpus_host_env_files_are_read_literally() {
    let _guard = exclusive();
    let pid = std::process::id();
    let rel = format!("infrastructure/.env-corpus-{pid}");
    let path = format!("{CHECKOUT}/{rel}");
    let _planted = Planted(vec![path.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let config = variant(
        dir.path(),
        &format!("{BASE}/backups"),
        &format!("{BASE}/state"),
        &rel,
    );
    let run =
        |args: &[&str]| ctops(["--config", config.to_str().unwrap()].iter().chain(args)).run();
    let mut planted = String::new();
    for row in expectations("dotenv/expect.tsv") {
        let (file, key) = (&row[0], &row[1]);
        let value: String = serde_json::from_str(&row[2]).unwrap();
        if planted != *file {
            plant_file(
                &path,
                &std::fs::read(corpus("dotenv").join(file)).unwrap(),
                "0600",
            );
            let list = run(&["env", "list", "--json"]).expect(0);
            let _ = list.json();
            planted = file.clone();
        }
        let got = run(&["env", "get", key]).expect(0);
        assert_eq!(
            got.output.stdout,
            format!("{value}\n").into_bytes(),
            "{file} {key}: {}",
            got.describe()
        );
    }
}

/// Sampled `.env` values (proptest's generator, a fixed seed) written by ctops's writer and
/// read back by `docker compose config`, which is what the services see.
#[test]
fn sampled_env_values_read_back_through_docker_compose_config() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let strategy = proptest::prop_oneof!["[ -~]{0,30}", "[a-z'\"$\\\\# =`\t]{0,16}", "\\PC{0,12}",];
    let mut runner = TestRunner::deterministic();
    let mut file = ctops::envfile::EnvFile::parse("# sampled by tests/corpus.rs\n");
    let mut written = Vec::new();
    while written.len() < 20 {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        let key = format!("SAMPLED_{:02}", written.len());
        if file.set(&key, &value).is_ok() {
            written.push((key, value));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), file.render()).unwrap();
    std::fs::write(
        dir.path().join("compose.yml"),
        "services:\n  sampled:\n    image: corpus-sampled\n    env_file: .env\n",
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["compose", "-p", "corpus-sampled", "-f"])
        .arg(dir.path().join("compose.yml"))
        .args(["config", "--format", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        file.render()
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = &doc["services"]["sampled"]["environment"];
    for (key, value) in &written {
        // `config` prints a compose file, where a literal `$` is written `$$`.
        assert_eq!(
            env[key].as_str(),
            Some(value.replace('$', "$$").as_str()),
            "{key}: written as {:?}",
            file.render().lines().find(|l| l.starts_with(key.as_str()))
        );
    }
}
