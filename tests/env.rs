//! `env` against the sandbox's real `.env` and compose stack: changes are live afterwards,
//! atomic, copied first, limited to the named services, and values are never shown.

use std::io::Read;
use std::time::Duration;

use crate::util::*;

const BACKUPS: &str = "/srv/ctops sandbox/backups";

fn env_path() -> String {
    format!("{CHECKOUT}/infrastructure/.env")
}

fn env_value(key: &str) -> String {
    std::fs::read_to_string(env_path())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_default()
        .to_string()
}

fn api_app_mode() -> String {
    let body = host("curl -s -m 4 http://127.0.0.1:18000/config");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["app_mode"].as_str().unwrap_or_default().to_string()
}

fn printenv(service: &str, key: &str) -> String {
    host(&format!(
        "docker exec {} printenv {key} || true",
        container(service)
    ))
    .trim()
    .to_string()
}

#[test]
fn env_set_is_live_atomic_copied_first_and_limited_to_the_named_services() {
    let _guard = exclusive();
    reset_host();
    let secrets: Vec<String> = std::fs::read_to_string(env_path())
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.to_string()))
        .filter(|v| v.len() >= 12)
        .collect();
    assert!(!secrets.is_empty());
    let lines_before = std::fs::read_to_string(env_path()).unwrap().lines().count();
    let (bot, postgres) = (container("bot"), container("postgres"));

    // A reader looping on the host: the file is never missing, never partial.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut text = String::new();
                match std::fs::File::open(env_path()).and_then(|mut f| f.read_to_string(&mut text))
                {
                    Ok(_) if text.lines().count() >= lines_before && text.ends_with('\n') => {}
                    other => bad.push(format!("{other:?}: {} lines", text.lines().count())),
                }
                reads += 1;
            }
            (reads, bad)
        })
    };
    let run = sandbox_ctops([
        "env",
        "set",
        "APP_MODE=maintenance",
        "--restart",
        "api",
        "-vv",
    ])
    .run();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(reads > 100 && bad.is_empty(), "{reads} reads, bad: {bad:?}");

    assert_eq!(env_value("APP_MODE"), "maintenance");
    assert_eq!(
        api_app_mode(),
        "maintenance",
        "the api runs with the new value"
    );
    assert_eq!(printenv("api", "APP_MODE"), "maintenance");
    assert_eq!(container("bot"), bot, "bot was not named: not recreated");
    assert_eq!(container("postgres"), postgres);
    assert_eq!(
        printenv("bot", "APP_MODE"),
        "normal",
        "bot keeps the old value until recreated"
    );
    assert_eq!(
        host(&format!("stat -c '%a %U' '{}'", env_path())).trim(),
        "600 deploy"
    );
    let copies = host(&format!(
        "grep -l '^APP_MODE=normal' '{BACKUPS}'/env/env-* | wc -l"
    ));
    assert_eq!(
        copies.trim(),
        "1",
        "a copy of the previous .env was made first"
    );
    for secret in &secrets {
        assert!(
            !run.stdout().contains(secret) && !run.stderr().contains(secret),
            "a value leaked into the output at -vv"
        );
    }

    // list and diff show keys, never values.
    let list = sandbox_ctops(["env", "list"]).run().expect(0);
    let diff = sandbox_ctops(["env", "diff"]).run().expect(0);
    let list_json = sandbox_ctops(["env", "list", "--json"]).run().expect(0);
    assert_schema("env-list.json", &list_json.json());
    let diff_json = sandbox_ctops(["env", "diff", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("env-diff.json", &diff_json);
    assert!(diff_json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["key"] == "APP_MODE" && c["change"] == "changed"));
    for out in [&list, &diff, &list_json] {
        for secret in secrets.iter().map(String::as_str).chain(["maintenance"]) {
            assert!(
                !out.stdout().contains(secret) && !out.stderr().contains(secret),
                "{}",
                out.describe()
            );
        }
    }
    assert!(
        list.stdout().contains("POSTGRES_PASSWORD"),
        "{}",
        list.describe()
    );
    assert!(
        diff.stdout().contains("~ APP_MODE (changed)"),
        "{}",
        diff.describe()
    );
    // get prints the one value asked for.
    let got = sandbox_ctops(["env", "get", "APP_MODE"]).run().expect(0);
    assert_eq!(got.stdout(), "maintenance\n");

    // unset + set with a value that needs quoting; comments and order kept.
    let before = std::fs::read_to_string(env_path()).unwrap();
    sandbox_ctops([
        "env",
        "set",
        "CTOPS_NOTE=two words # not a comment",
        "CTOPS_NOTE2=x",
        "--restart",
        "api",
    ])
    .run()
    .expect(0);
    assert_eq!(printenv("api", "CTOPS_NOTE"), "two words # not a comment");
    // Several keys at once, as `set` takes them.
    let unset = sandbox_ctops([
        "env",
        "unset",
        "CTOPS_NOTE",
        "CTOPS_NOTE2",
        "--restart",
        "api",
        "--json",
    ])
    .run()
    .expect(0);
    assert_schema("env-change.json", &unset.json());
    assert_eq!(std::fs::read_to_string(env_path()).unwrap(), before);
    assert_eq!(printenv("api", "CTOPS_NOTE"), "");
}

#[test]
fn env_set_that_breaks_the_api_puts_the_old_file_back() {
    let _guard = exclusive();
    reset_host();
    let before = std::fs::read(env_path()).unwrap();
    let run = sandbox_ctops(["env", "set", "API_PORT=18009", "--restart", "api"]).run();
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("previous .env is back"),
        "{}",
        run.describe()
    );
    assert_eq!(std::fs::read(env_path()).unwrap(), before);
    wait_until("the api back on its port", Duration::from_secs(30), || {
        host_ok("curl -sf -m 2 http://127.0.0.1:18000/health")
    });
    sandbox_ctops(["health"]).run().expect(0);
    let left = host("ls '/srv/ctops sandbox/state'");
    assert!(
        !left.contains("env-before") && !left.contains("env-new"),
        "{left}"
    );
}

#[test]
fn env_edit_validates_before_anything_changes() {
    let _guard = exclusive();
    reset_host();
    let before = std::fs::read(env_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-editor");
    std::fs::write(
        &bad,
        "#!/bin/sh\necho 'this is not an assignment' >> \"$1\"\n",
    )
    .unwrap();
    let good = dir.path().join("good-editor");
    std::fs::write(
        &good,
        "#!/bin/sh\nsed -i 's/^APP_MODE=.*/APP_MODE=edited/' \"$1\"\n",
    )
    .unwrap();
    host(&format!("chmod +x {} {}", bad.display(), good.display()));
    let run = sandbox_ctops(["env", "edit"]).env("EDITOR", &bad).run();
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(run.stderr().contains("line"), "{}", run.describe());
    assert_eq!(std::fs::read(env_path()).unwrap(), before);
    let run = sandbox_ctops(["env", "edit"]).env("EDITOR", &good).run();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_eq!(
        api_app_mode(),
        "edited",
        "without --restart: what changed was recreated"
    );
}

const STATE_DIR: &str = "/srv/ctops sandbox/state";

/// The journal of the operation the host runs now, once it started one after `previous`.
fn wait_for_new_operation(previous: &str) -> String {
    let mut journal = String::new();
    wait_until("the runner to start", Duration::from_secs(30), || {
        let last = std::fs::read_to_string(format!("{STATE_DIR}/last")).unwrap_or_default();
        if last.is_empty() || last == previous {
            return false;
        }
        journal = format!("{STATE_DIR}/ops/{last}/journal");
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .contains("\tstart\t")
    });
    journal
}

#[test]
fn env_set_refuses_when_env_changed_between_the_read_and_the_replace() {
    let _guard = exclusive();
    reset_host();
    let previous = std::fs::read_to_string(format!("{STATE_DIR}/last")).unwrap_or_default();
    // Each runner step waits 3s before it runs: the test writes .env meanwhile, as a rotation
    // finishing between this command's read and its replace would.
    let (child, _home) = sandbox_ctops(["env", "set", "APP_MODE=maintenance", "--restart", "api"])
        .env("CTOPS_STEP_DELAY", "3")
        .spawn();
    wait_for_new_operation(&previous);
    let mut concurrent = std::fs::read_to_string(env_path()).unwrap();
    concurrent.push_str("ROTATED_MEANWHILE=new-token\n");
    std::fs::write(env_path(), &concurrent).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(".env changed since it was read; run again"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(env_path()).unwrap(),
        concurrent,
        "the concurrently written .env stays"
    );
    assert_eq!(env_value("APP_MODE"), "normal");
    let left = host(&format!("ls '{STATE_DIR}'"));
    assert!(
        !left.contains("env-before") && !left.contains("env-new"),
        "{left}"
    );
    reset_host();
}

/// A `cp` on the deploy account's PATH that runs out of room copying `.env` to the runner's
/// `env-before-*`: half the file written, then an error, as a full disk does. Dropping it
/// takes it away however the test ends.
struct FullDiskCp {
    _dir: tempfile::TempDir,
}

const BASHRC: &str = "/home/deploy/.bashrc";
const SHIM_MARK: &str = "ctops-fulldisk";

impl FullDiskCp {
    fn install() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(SHIM_MARK)
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let real = host("command -v cp").trim().to_string();
        let shim = dir.path().join("cp");
        std::fs::write(
            &shim,
            format!(
                r#"#!/bin/sh
for last in "$@"; do :; done
case "$last" in
*env-before-*)
    for src in "$@"; do case "$src" in -*) ;; *) break ;; esac; done
    head -c 20 "$src" > "$last"
    echo "cp: error writing '$last': No space left on device" >&2
    exit 1 ;;
esac
exec {real} "$@"
"#
            ),
        )
        .unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bashrc = std::fs::read_to_string(BASHRC).unwrap();
        std::fs::write(
            BASHRC,
            format!("export PATH={}:$PATH\n{bashrc}", dir.path().display()),
        )
        .unwrap();
        FullDiskCp { _dir: dir }
    }
}

impl Drop for FullDiskCp {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(BASHRC) {
            let kept: String = text
                .lines()
                .filter(|l| !l.contains(SHIM_MARK))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(BASHRC, kept);
        }
    }
}

#[test]
fn a_copy_of_env_cut_short_by_a_full_disk_is_never_put_back() {
    let _guard = exclusive();
    reset_host();
    let before = std::fs::read(env_path()).unwrap();
    let run = {
        let _cp = FullDiskCp::install();
        sandbox_ctops(["env", "set", "APP_MODE=maintenance", "--restart", "api"]).run()
    };
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert_eq!(
        std::fs::read(env_path()).unwrap(),
        before,
        ".env is untouched, not the copy cut short"
    );
    let left = host(&format!("ls '{STATE_DIR}'"));
    assert!(!left.contains("env-before"), "{left}");
    wait_healthy();
}
