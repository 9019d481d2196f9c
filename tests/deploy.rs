//! Deploy and rollback against the sandbox, checking the host itself: the version /health
//! reports, the schema revision, the release history, the lock, the journal.

use std::time::Duration;

use crate::util::*;

const STATE_DIR: &str = "/srv/ctops sandbox/state";
const BACKUPS: &str = "/srv/ctops sandbox/backups";

fn deploy(reference: &str) -> Run {
    sandbox_ctops([
        "deploy",
        "--ref",
        reference,
        "--skip-preflight",
        "--reason",
        "integration test",
        "--json",
    ])
    .run()
}

fn health_version() -> String {
    let body = host("curl -s -m 5 http://127.0.0.1:18000/health");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("/health: {body}"));
    v["version"].as_str().unwrap_or_default().to_string()
}

fn db_revision() -> String {
    host(&format!("docker exec {} psql -U trader -d trader_psy -tAc 'SELECT version_num FROM alembic_version'", container("postgres")))
        .trim()
        .to_string()
}

/// The schema, with the random `\restrict` lines of recent pg_dump releases removed.
fn schema() -> String {
    host(&format!(
        "docker exec {} pg_dump -U trader --schema-only trader_psy",
        container("postgres")
    ))
    .lines()
    .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
    .collect::<Vec<_>>()
    .join("\n")
}

fn commit_of(reference: &str) -> String {
    host(&format!(
        "git -c safe.directory='*' -C '{CHECKOUT}' rev-parse '{reference}^{{commit}}'"
    ))
    .trim()
    .to_string()
}

fn assert_lock_free() {
    let run = sandbox_ctops(["lock", "status", "--json"]).run().expect(0);
    let doc = run.json();
    assert_schema("lock-status.json", &doc);
    assert_eq!(doc["held"], false, "{}", run.describe());
}

fn running(service: &str) -> bool {
    host(&format!(
        "docker inspect -f '{{{{.State.Status}}}}' {}",
        container(service)
    ))
    .trim()
        == "running"
}

#[test]
fn deploy_v1_27_0_over_v1_26_0() {
    let _lock = exclusive();
    reset_host();
    let run = deploy("v1.27.0").expect(0);
    let doc = run.json();
    assert_schema("deploy.json", &doc);
    assert_eq!(
        (
            doc["from"]["version"].as_str(),
            doc["to"]["version"].as_str()
        ),
        (Some("1.26.0"), Some("1.27.0"))
    );
    assert_eq!(doc["to"]["migration"], "0003");
    assert_eq!(health_version(), "1.27.0");
    assert_eq!(db_revision(), "0003");
    assert_eq!(head_commit(), commit_of("v1.27.0"));

    let releases = sandbox_ctops(["releases", "--json"]).run().expect(0).json();
    assert_schema("releases.json", &releases);
    assert_eq!(releases["releases"][0]["ref"], "v1.27.0");
    assert_eq!(releases["releases"][0]["result"], "deployed");
    let audit = host(&format!("cat '{STATE_DIR}/audit.jsonl'"));
    assert!(
        audit.contains(r#""result":"deployed""#) && audit.contains("integration test"),
        "{audit}"
    );
    let manifest = host(&format!(
        "cat '{BACKUPS}'/db-*-pre-deploy.dump.manifest.json"
    ));
    let manifest: serde_json::Value =
        serde_json::from_str(manifest.trim()).expect("a pre-migration backup with its manifest");
    let name = manifest["name"].as_str().unwrap();
    let sha = host(&format!("sha256sum '{BACKUPS}/{name}' | cut -d' ' -f1"));
    assert_eq!(
        manifest["sha256"],
        sha.trim(),
        "the backup's checksum matches its manifest"
    );
    assert_eq!(manifest["revision"], "0002", "taken before the migration");
    assert_lock_free();
}

fn assert_broken_version_rolls_back(reference: &str) {
    reset_host();
    deploy("v1.27.0").expect(0);
    let before = schema();
    let run = deploy(reference).expect(1);
    let doc = run.json();
    assert_schema("deploy.json", &doc);
    assert_eq!(doc["rolled_back"], true, "{}", run.describe());
    assert_eq!(health_version(), "1.27.0", "{}", run.describe());
    assert_eq!(db_revision(), "0003");
    assert_eq!(schema(), before, "the schema must be as before");
    assert_eq!(head_commit(), commit_of("v1.27.0"));
    assert!(running("bot") && running("api"));
    assert!(
        run.stderr().contains("1.27.0"),
        "says what runs now: {}",
        run.describe()
    );
    assert_lock_free();
}

#[test]
fn a_migration_that_fails_half_way_is_undone() {
    let _lock = exclusive();
    assert_broken_version_rolls_back("broken-migration");
}

#[test]
fn an_api_that_crashes_at_start_is_rolled_back_with_its_migration() {
    let _lock = exclusive();
    assert_broken_version_rolls_back("broken-api-crash");
}

#[test]
fn a_crash_looping_bot_fails_the_gate() {
    let _lock = exclusive();
    assert_broken_version_rolls_back("broken-bot");
}

#[test]
fn rollback_returns_to_the_previous_release_not_head_minus_one() {
    let _lock = exclusive();
    reset_host();
    deploy("v1.27.0").expect(0);
    // main is three commits past v1.27.0.
    let run = sandbox_ctops(["deploy", "--skip-preflight", "--reason", "integration test"])
        .run()
        .expect(0);
    assert_eq!(head_commit(), commit_of("main"), "{}", run.describe());
    assert_eq!(health_version(), "1.27.1");
    let run = sandbox_ctops(["rollback", "--yes", "--json"])
        .run()
        .expect(0);
    assert_schema("deploy.json", &run.json());
    assert_eq!(head_commit(), commit_of("v1.27.0"), "{}", run.describe());
    assert_ne!(head_commit(), commit_of("main~1"));
    assert_eq!(health_version(), "1.27.0");
    assert_eq!(db_revision(), "0003");
    // The next deploy of the branch works from there.
    sandbox_ctops(["deploy", "--skip-preflight", "--reason", "integration test"])
        .run()
        .expect(0);
    assert_eq!(health_version(), "1.27.1");
}

#[test]
fn a_second_rollback_goes_one_release_further_back_not_to_the_one_it_left() {
    let _lock = exclusive();
    reset_host();
    deploy("v1.27.0").expect(0);
    sandbox_ctops(["deploy", "--skip-preflight", "--reason", "integration test"])
        .run()
        .expect(0);
    assert_eq!(health_version(), "1.27.1");
    let branch_head = head_commit();
    sandbox_ctops(["rollback", "--yes"]).run().expect(0);
    assert_eq!(health_version(), "1.27.0");
    // The release the first rollback left is marked in the history.
    let releases = sandbox_ctops(["releases", "--json"]).run().expect(0).json();
    assert_schema("releases.json", &releases);
    let left = &releases["releases"][1];
    assert_eq!(
        (left["commit"].as_str(), left["rolled_back_from"].as_bool()),
        (Some(branch_head.as_str()), Some(true)),
        "{releases}"
    );
    let text = sandbox_ctops(["releases"]).run().expect(0).stdout();
    assert!(text.contains("rolled back from"), "{text}");
    // The second rollback goes past it, to the release before.
    let run = sandbox_ctops(["rollback", "--yes"]).run().expect(0);
    assert_eq!(head_commit(), commit_of("v1.26.0"), "{}", run.describe());
    assert_eq!(health_version(), "1.26.0");
    // --to still reaches any release, the one left included.
    sandbox_ctops(["rollback", "--to", "main", "--yes"])
        .run()
        .expect(0);
    assert_eq!(health_version(), "1.27.1");
    assert_lock_free();
}

#[test]
fn the_gate_fetches_gate_url_on_the_host_while_health_fetches_health_url_from_here() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    // As with split DNS: the public health_url is not what the host reaches.
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "health_url = \"http://127.0.0.1:18000/health\"",
            "health_url = \"http://127.0.0.1:1/health\"\ngate_url = \"http://127.0.0.1:18000/health\"",
        )
    });
    let config = config.to_str().unwrap();
    let run = ctops([
        "--config",
        config,
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "gate_url",
        "--json",
    ])
    .run()
    .expect(0);
    assert_eq!(run.json()["outcome"], "deployed", "{}", run.describe());
    assert_eq!(health_version(), "1.27.0");
    // `health` fetches health_url from this machine: here it is unreachable.
    let run = ctops(["--config", config, "health"]).run();
    assert_eq!(run.code(), 1, "{}", run.describe());
    let shown = ctops(["--config", config, "config", "check"])
        .run()
        .expect(0);
    assert!(shown.stdout().contains("gate_url"), "{}", shown.describe());
    assert_lock_free();
}

#[test]
fn rollback_to_v1_25_0_downgrades_both_migrations_first() {
    let _lock = exclusive();
    reset_host();
    deploy("v1.27.0").expect(0);
    let run = sandbox_ctops(["rollback", "--to", "v1.25.0", "--yes", "--json"])
        .run()
        .expect(0);
    let doc = run.json();
    let steps: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "ok")
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    let downgrade = steps
        .iter()
        .position(|s| *s == "downgrade")
        .expect("a downgrade step");
    let checkout = steps.iter().position(|s| *s == "checkout").unwrap();
    assert!(
        downgrade < checkout,
        "downgrade with the current image before the old code: {steps:?}"
    );
    assert_eq!(health_version(), "1.25.0");
    assert_eq!(db_revision(), "0001");
}

#[test]
fn two_deploys_at_once_one_proceeds_the_other_names_the_holder() {
    let _lock = exclusive();
    reset_host();
    let (first, _home) = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "first",
    ])
    .env("CTOPS_STEP_DELAY", "1")
    .spawn();
    wait_until(
        "the first deploy to hold the lock",
        Duration::from_secs(20),
        || host_ok(&format!("test -f '{STATE_DIR}/lock'")),
    );
    let second = deploy("v1.27.0").expect(4);
    assert!(
        second.stderr().contains("held by") && second.stderr().contains("deploy --ref v1.27.0"),
        "{}",
        second.describe()
    );
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(health_version(), "1.27.0");
    assert_lock_free();
}

fn wait_for_the_runner_to_end() {
    wait_until(
        "the runner to finish on the host",
        Duration::from_secs(90),
        || {
            let last = host(&format!("cat '{STATE_DIR}/last' 2>/dev/null || true"));
            !last.is_empty()
                && host_ok(&format!(
                    "grep -q '	end	' '{STATE_DIR}/ops/{}/journal'",
                    last.trim()
                ))
        },
    );
}

fn cut_the_connection_at(step: &str) {
    reset_host();
    let run = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "fault",
        "--json",
    ])
    .env("CTOPS_FAULT", format!("disconnect-at:{step}"))
    .env("CTOPS_STEP_DELAY", "1")
    .run()
    .expect(6);
    assert!(
        run.stderr().contains("goes on on the host"),
        "{}",
        run.describe()
    );
    wait_for_the_runner_to_end();
    assert_eq!(health_version(), "1.27.0");
    assert_eq!(db_revision(), "0003");
    let status = sandbox_ctops(["status", "--json"]).run().expect(0).json();
    assert_schema("status.json", &status);
    assert_eq!(status["operation"]["state"], "deployed", "{status:#}");
    assert_eq!(
        status["operation"]["watched"], false,
        "it finished while nobody watched: {status:#}"
    );
    assert!(status["lock"].is_null(), "no lock left: {status:#}");
}

#[test]
fn a_connection_cut_during_the_migration_does_not_strand_the_host() {
    let _lock = exclusive();
    cut_the_connection_at("migrate");
}

#[test]
fn a_connection_cut_during_the_health_gate_does_not_strand_the_host() {
    let _lock = exclusive();
    cut_the_connection_at("gate");
}

/// Ctrl-C while `step` runs: the step finishes, then the runner rolls back (or, after the
/// last step, the deploy stands); either way `status --json` matches the host.
fn ctrl_c_at(step: &str) {
    reset_host();
    // Images kept by an earlier deploy of v1.27.0 would be reused: make this one build.
    let kept = format!("ctops-{}", &commit_of("v1.27.0")[..12]);
    host(&format!(
        "docker rmi infrastructure-api:{kept} infrastructure-bot:{kept} >/dev/null 2>&1 || true"
    ));
    let (child, _home) = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "ctrl-c",
    ])
    .env("CTOPS_STEP_DELAY", "2")
    .spawn();
    wait_until(
        &format!("the {step} step to start"),
        Duration::from_secs(90),
        || {
            host_ok(&format!(
                "grep -q '\tstart\t{step}\t' '{STATE_DIR}'/ops/*/journal 2>/dev/null"
            ))
        },
    );
    host(&format!("kill -INT {}", child.id()));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = sandbox_ctops(["status", "--json"]).run().expect(0).json();
    assert_schema("status.json", &status);
    assert!(status["lock"].is_null(), "{status:#}");
    let live = health_version();
    assert_eq!(
        status["checkout"]["commit"],
        head_commit(),
        "{step}: {status:#}"
    );
    assert_eq!(
        status["checkout"]["version"], live,
        "{step}: the checkout matches what runs"
    );
    match status["operation"]["state"].as_str() {
        Some("rolled-back") => {
            assert_eq!(out.status.code(), Some(130), "{step}: {stderr}");
            assert_eq!(
                (live.as_str(), db_revision().as_str()),
                ("1.26.0", "0002"),
                "{step}"
            );
        }
        Some("deployed") => {
            assert_eq!(
                step, "gate",
                "only an interrupt during the last step lets the deploy stand"
            );
            assert_eq!((live.as_str(), db_revision().as_str()), ("1.27.0", "0003"));
        }
        other => panic!("{step}: unexpected state {other:?}: {stderr}"),
    }
}

#[test]
fn ctrl_c_at_each_step_leaves_a_host_that_status_describes() {
    let _lock = exclusive();
    for step in [
        "keep", "checkout", "build", "tag", "backup", "migrate", "up", "gate",
    ] {
        ctrl_c_at(step);
    }
}

#[test]
fn deploying_the_running_commit_brings_a_stopped_bot_back_without_a_rebuild() {
    let _lock = exclusive();
    reset_host();
    host(&format!("docker stop -t 1 {}", container("bot")));
    let run = deploy("v1.26.0").expect(0);
    let doc = run.json();
    let steps: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        !steps.contains(&"build") && !steps.contains(&"checkout"),
        "{steps:?}"
    );
    assert!(running("bot"));
    assert_eq!(health_version(), "1.26.0");
}

#[test]
fn dry_run_changes_nothing() {
    let _lock = exclusive();
    reset_host();
    let containers = || {
        host("docker ps -a --format '{{.ID}} {{.Image}} {{.Status}}' --filter label=com.docker.compose.project=infrastructure | sed 's/ Up .*/ Up/' | sort")
    };
    let tree = || {
        host(&format!(
            "git -c safe.directory='*' -C '{CHECKOUT}' status --porcelain"
        ))
    };
    let (commit, before_tree, before_containers, before_schema) =
        (head_commit(), tree(), containers(), schema());
    let run = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "dry",
        "--dry-run",
    ])
    .run()
    .expect(0);
    assert!(
        run.stdout().contains("s_migrate()") && run.stdout().contains("alembic upgrade head"),
        "{}",
        run.describe()
    );
    assert_eq!(head_commit(), commit);
    assert_eq!(tree(), before_tree);
    assert_eq!(containers(), before_containers);
    assert_eq!(schema(), before_schema);
    assert!(!host_ok(&format!("test -e '{STATE_DIR}/lock'")));
}

#[test]
fn an_unknown_ref_is_refused_before_anything_changes() {
    let _lock = exclusive();
    reset_host();
    let run = deploy("v9.9.9").expect(2);
    assert!(run.stderr().contains("unknown ref"), "{}", run.describe());
    assert_eq!(head_commit(), commit_of("v1.26.0"));
    assert_lock_free();
    sandbox_ctops([
        "deploy",
        "--ref",
        "--upload-pack=touch /tmp/x",
        "--skip-preflight",
        "--reason",
        "x",
    ])
    .run()
    .expect(2);
}

/// A local clone of the fixture's origin, as the engineer's checkout.
fn local_checkout(reference: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // The origin belongs to the sandbox's deploy user; trust it for this clone only.
    let trust = dir.path().with_extension("gitconfig");
    std::fs::write(&trust, "[safe]\n\tdirectory = *\n").unwrap();
    host(&format!(
        "GIT_CONFIG_GLOBAL={} git clone -q '/srv/ctops sandbox/origin.git' {d} && git -C {d} checkout -q {reference} && git -C {d} config user.email t@t && git -C {d} config user.name t",
        trust.display(),
        d = dir.path().display()
    ));
    dir
}

#[test]
fn preflight_passes_on_the_branch_head_and_says_what_it_did_not_check() {
    let _lock = exclusive();
    reset_host();
    let repo = local_checkout("main");
    let run = sandbox_ctops([
        "preflight",
        "--repo",
        repo.path().to_str().unwrap(),
        "--json",
    ])
    .run()
    .expect(0);
    let doc = run.json();
    assert_schema("preflight.json", &doc);
    let verdict = |name: &str| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["verdict"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for name in [
        "clean tree",
        "same commit",
        "version",
        "changelog",
        "commit messages",
        "one migration head",
    ] {
        assert_eq!(verdict(name), "passed", "{name}: {}", run.describe());
    }
    assert_eq!(verdict("tests"), "not_checked");
    // deploy runs the same checks from the checkout it is started in.
    let run = sandbox_ctops(["deploy", "--repo", repo.path().to_str().unwrap()])
        .run()
        .expect(0);
    assert!(run.stderr().contains("preflight"), "{}", run.describe());
    assert_eq!(health_version(), "1.27.1");
}

#[test]
fn redeploying_the_running_commit_passes_preflight_and_brings_a_stopped_bot_back() {
    let _lock = exclusive();
    reset_host();
    // The engineer's checkout is at the running release: its VERSION is the host's.
    let repo = local_checkout("v1.26.0");
    host(&format!("docker stop -t 1 {}", container("bot")));
    let run = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.26.0",
        "--repo",
        repo.path().to_str().unwrap(),
    ])
    .run()
    .expect(0);
    assert!(
        run.stderr().contains("no new version to check"),
        "{}",
        run.describe()
    );
    assert!(running("bot"), "{}", run.describe());
    assert_eq!(health_version(), "1.26.0");
    // --force rebuilds the same commit, through the same preflight.
    sandbox_ctops([
        "deploy",
        "--ref",
        "v1.26.0",
        "--force",
        "--repo",
        repo.path().to_str().unwrap(),
    ])
    .run()
    .expect(0);
    assert_eq!(head_commit(), commit_of("v1.26.0"));
    assert_lock_free();
}

#[test]
fn preflight_failures_say_how_to_fix_them_and_stop_the_deploy() {
    let _lock = exclusive();
    reset_host();
    let repo = local_checkout("main");
    host(&format!(
        "cd {} && echo x >> README.md && git commit -qam 'wip stuff'",
        repo.path().display()
    ));
    let run = sandbox_ctops(["deploy", "--repo", repo.path().to_str().unwrap()])
        .run()
        .expect(4);
    assert!(
        run.stderr().contains("commit messages") && run.stderr().contains("same commit"),
        "{}",
        run.describe()
    );
    assert!(run.stderr().contains("fix:"), "{}", run.describe());
    assert_eq!(head_commit(), commit_of("v1.26.0"), "nothing deployed");
    assert_lock_free();
}

/// An HTTP receiver on loopback that appends each POST body to a file.
fn start_receiver(dir: &std::path::Path) -> (std::process::Child, u16, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("posts");
    let server = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        open(sys.argv[2], 'ab').write(body + b'\n')
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;
    let child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", server, &port.to_string(), log.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_until("the receiver to listen", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, port, log)
}

#[test]
fn a_new_version_is_announced_once_and_a_failed_announcement_only_warns() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let (mut receiver, port, log) = start_receiver(dir.path());
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "[deploy]\n",
            &format!("[deploy]\nnotify_url = \"http://127.0.0.1:{port}/release\"\n"),
        )
    });
    let ctops_with = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        ctops(all).run()
    };
    let posts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    ctops_with(&[
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "notify",
    ])
    .expect(0);
    let sent = posts();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let post: serde_json::Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(post["version"], "1.27.0");
    assert_eq!(post["commit"], commit_of("v1.27.0"));
    assert!(
        !post["notes"].as_str().unwrap().is_empty(),
        "the CHANGELOG section: {post}"
    );
    // A redeploy and a rollback announce nothing.
    ctops_with(&[
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "notify",
    ])
    .expect(0);
    ctops_with(&["rollback", "--yes"]).expect(0);
    assert_eq!(posts().len(), 1);
    // A receiver that is gone: a warning, and the deploy still succeeds.
    receiver.kill().unwrap();
    let _ = receiver.wait();
    let run = ctops_with(&["deploy", "--skip-preflight", "--reason", "notify"]).expect(0);
    assert!(
        run.stderr().contains("warning: notification failed"),
        "{}",
        run.describe()
    );
    assert_eq!(health_version(), "1.27.1");
}

/// Every process argv seen on this machine (the host) until `stop` is set.
fn sample_argv(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(argv) = std::fs::read(entry.path().join("cmdline")) {
                    seen.insert(String::from_utf8_lossy(&argv).replace('\0', " "));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.into_iter().collect::<Vec<_>>().join("\n")
    })
}

#[test]
fn a_failed_notification_names_only_the_host_and_no_argv_holds_the_url() {
    let _lock = exclusive();
    reset_host();
    // A receiver that takes the connection, says nothing for a second and hangs up: the
    // POST fails (as against a closed port) but curl lives long enough for the sampler to
    // see its argv.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::sleep(Duration::from_millis(1500));
            drop(conn);
        }
    });
    let token = "bot7700:SECRET-notify-token";
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "[deploy]\n",
            &format!("[deploy]\nnotify_url = \"http://127.0.0.1:{port}/{token}/sendMessage\"\n"),
        )
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_argv(stop.clone());
    let run = ctops([
        "--config",
        config.to_str().unwrap(),
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "notify",
    ])
    .run();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let argv = sampler.join().unwrap();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(
        run.stderr()
            .contains("notification failed: POST to 127.0.0.1 did not succeed"),
        "{}",
        run.describe()
    );
    assert!(
        argv.lines()
            .any(|l| l.starts_with("curl ") && l.contains("-K -")),
        "the sampler saw the POST's curl: {argv}"
    );
    let journals = host(&format!("cat '{STATE_DIR}'/ops/*/journal"));
    for (place, text) in [
        ("stderr", run.stderr()),
        ("stdout", run.stdout()),
        ("the journals", journals),
        ("the argv of the processes on the host", argv),
    ] {
        assert!(
            !text.contains("SECRET-notify-token"),
            "the URL is in {place}: {text}"
        );
    }
}
