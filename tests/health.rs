//! `health` against the live sandbox: all green, a stopped redis, a frozen postgres, a
//! stopped api, each with the exit code the contract gives.

use std::time::Duration;

use crate::util::*;

fn rows(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["checks"].as_array().unwrap().clone()
}

fn row(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    rows(doc)
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {doc:#}"))
}

#[test]
fn all_green_on_a_healthy_sandbox() {
    let _lock = shared();
    let run = sandbox_ctops(["health", "--json"]).run().expect(0);
    let doc = run.json();
    assert_schema("health.json", &doc);
    for name in [
        "api",
        "postgres",
        "redis",
        "minio",
        "service api",
        "service bot",
        "service postgres",
        "service redis",
        "service minio",
    ] {
        assert_eq!(row(&doc, name)["ok"], true, "{name}: {}", run.describe());
    }
    let version = host(&format!("cat '{CHECKOUT}/VERSION'"));
    assert!(
        row(&doc, "api")["detail"]
            .as_str()
            .unwrap()
            .contains(version.trim()),
        "{}",
        run.describe()
    );
    let human = sandbox_ctops(["health"]).run().expect(0);
    assert!(
        human
            .stderr()
            .contains("health of sandbox (trader-psy-sandbox): up"),
        "{}",
        human.describe()
    );
}

#[test]
fn a_stopped_redis_is_degraded_and_says_why() {
    let _lock = exclusive();
    let redis = container("redis");
    host(&format!("docker stop -t 2 {redis}"));
    let _restore = Restore(vec![format!("docker start {redis}")]);
    let run = sandbox_ctops(["health", "--json"]).run().expect(5);
    let doc = run.json();
    assert_schema("health.json", &doc);
    let redis_row = row(&doc, "redis");
    assert_eq!(redis_row["ok"], false);
    assert!(
        redis_row["detail"]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{}",
        run.describe()
    );
    assert_eq!(row(&doc, "service redis")["ok"], false);
    assert_eq!(row(&doc, "api")["ok"], true);
}

#[test]
fn a_frozen_postgres_fails_its_row_within_the_timeout() {
    let _lock = exclusive();
    let postgres = container("postgres");
    // SIGSTOP every process of the container: the port stays open but nothing answers.
    host(&format!(
        "docker top {postgres} -o pid | tail -n +2 | xargs kill -STOP"
    ));
    let _restore = Restore(vec![format!(
        "docker top {postgres} -o pid | tail -n +2 | xargs kill -CONT"
    )]);
    let run = sandbox_ctops(["health", "--json"]).run();
    let doc = run.json();
    assert_schema("health.json", &doc);
    let pg = row(&doc, "postgres");
    assert_eq!(pg["ok"], false, "{}", run.describe());
    assert!(
        pg["latency_ms"].as_u64().unwrap() <= 6000,
        "{}",
        run.describe()
    );
    assert_ne!(run.code(), 0, "{}", run.describe());
    assert!(run.elapsed < Duration::from_secs(12), "{}", run.describe());
}

#[test]
fn a_stopped_api_exits_1() {
    let _lock = exclusive();
    let api = container("api");
    host(&format!("docker stop -t 2 {api}"));
    let _restore = Restore(vec![format!("docker start {api}")]);
    let run = sandbox_ctops(["health", "--json"]).run().expect(1);
    let doc = run.json();
    assert_schema("health.json", &doc);
    assert_eq!(row(&doc, "api")["ok"], false);
    assert_eq!(doc["status"], "api down");
}

#[test]
fn watch_prints_one_document_per_round_until_interrupted() {
    let _lock = shared();
    let (mut child, _home) = sandbox_ctops(["health", "--watch", "1s", "--json"]).spawn();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        lines.push(line);
    }
    host(&format!("kill -INT {}", child.id()));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    for line in lines {
        assert_schema("health.json", &serde_json::from_str(&line).unwrap());
    }
}

/// SPEC: `health` shows the age of the newest database backup and flags one older than
/// `backup.db.max_age` (and none at all). A backup folder of the test's own keeps the
/// other tests' backups out of it.
#[test]
fn the_backup_row_judges_the_newest_backups_age() {
    let _lock = shared();
    let backups = "/srv/ctops sandbox/health-test-backups";
    host(&format!("rm -rf '{backups}'"));
    let _cleanup = Restore(vec![format!("rm -rf '{backups}'")]);
    let dir = tempfile::tempdir().unwrap();
    let with_max_age = |max_age: &str| {
        variant_config(dir.path(), |text| {
            text.replace(
                "backup_dir = \"/srv/ctops sandbox/backups\"",
                &format!("backup_dir = {backups:?}"),
            )
            .replace("max_age = \"0s\"", &format!("max_age = {max_age:?}"))
        })
    };
    let health = |config: &std::path::Path, code: i32| {
        let run = ctops(["--config", config.to_str().unwrap(), "health", "--json"])
            .run()
            .expect(code);
        assert_schema("health.json", &run.json());
        row(&run.json(), "backup db")
    };

    let config = with_max_age("26h");
    let none = health(&config, 5);
    assert_eq!(none["ok"], false);
    assert!(
        none["detail"]
            .as_str()
            .unwrap()
            .contains("no database backup"),
        "{none}"
    );

    ctops(["--config", config.to_str().unwrap(), "backup", "db"])
        .run()
        .expect(0);
    let fresh = health(&config, 0);
    assert_eq!(fresh["ok"], true, "{fresh}");
    let detail = fresh["detail"].as_str().unwrap();
    let name = host(&format!(
        "cd '{backups}' && ls db-*.manifest.json | sed 's/.manifest.json$//'"
    ));
    assert!(
        detail.contains(&format!("newest {}", name.trim())),
        "{detail}"
    );

    std::thread::sleep(Duration::from_secs(2));
    let stale = health(&with_max_age("1s"), 5);
    assert_eq!(stale["ok"], false);
    assert!(
        stale["detail"]
            .as_str()
            .unwrap()
            .contains("older than backup.db.max_age 1s"),
        "{stale}"
    );
}

/// The sandbox config with the database and redis asked natively (as the README's example
/// config does), plus `closed`, a port nothing listens on.
fn native_config(dir: &std::path::Path) -> std::path::PathBuf {
    variant_config(dir, |text| {
        text.lines()
            .map(|line| {
                if line.starts_with("postgres = {") {
                    "postgres = { postgres = \"127.0.0.1:15432\" }".to_string()
                } else if line.starts_with("redis = {") {
                    "redis = { redis = \"127.0.0.1:16379\" }\nclosed = { redis = \"127.0.0.1:9\" }"
                        .to_string()
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn native_health(config: &std::path::Path, code: i32) -> (Run, serde_json::Value) {
    let run = ctops([
        "--config",
        config.to_str().unwrap(),
        "-v",
        "health",
        "--json",
    ])
    .run()
    .expect(code);
    let doc = run.json();
    assert_schema("health.json", &doc);
    (run, doc)
}

/// Native checks answer in their own protocol over the one connection: green on a healthy
/// sandbox, with no `docker exec` at all; a port nothing listens on is red although the
/// forward's local end accepts the connection.
#[test]
fn native_checks_are_green_when_up_and_a_closed_port_is_red() {
    let _lock = shared();
    let dir = tempfile::tempdir().unwrap();
    let (run, doc) = native_health(&native_config(dir.path()), 5);
    let pg = row(&doc, "postgres");
    assert_eq!(pg["ok"], true, "{}", run.describe());
    assert_eq!(pg["detail"], "accepting connections", "{}", run.describe());
    let redis = row(&doc, "redis");
    assert_eq!(redis["ok"], true, "{}", run.describe());
    assert_eq!(redis["detail"], "PONG", "{}", run.describe());
    let closed = row(&doc, "closed");
    assert_eq!(closed["ok"], false, "{}", run.describe());
    assert!(
        closed["detail"].as_str().unwrap().contains("127.0.0.1:9"),
        "{}",
        run.describe()
    );
    assert_eq!(doc["status"], "degraded");
    assert!(
        !run.stderr().contains("docker exec"),
        "a native check ran a command in a container: {}",
        run.describe()
    );
}

/// With the database and redis containers stopped, their native checks are red (a forward
/// whose far end is closed is not an answer), and green again once they are back.
#[test]
fn native_checks_are_red_with_the_database_and_redis_stopped() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let config = native_config(dir.path());
    let (postgres, redis) = (container("postgres"), container("redis"));
    host(&format!("docker stop -t 5 {postgres} {redis}"));
    let restore = Restore(vec![format!("docker start {postgres} {redis}")]);
    let (run, doc) = native_health(&config, 5);
    for name in ["postgres", "redis"] {
        let r = row(&doc, name);
        assert_eq!(r["ok"], false, "{name}: {}", run.describe());
        assert!(
            r["detail"].as_str().unwrap().contains("no answer from"),
            "{name}: {}",
            run.describe()
        );
    }
    drop(restore); // started again and healthy
    let (run, doc) = native_health(&config, 5);
    for name in ["postgres", "redis"] {
        assert_eq!(row(&doc, name)["ok"], true, "{name}: {}", run.describe());
    }
}

/// A native check that names a compose service whose port cannot be told (the sandbox's
/// services use the host's network and publish none) is refused before anything is asked.
#[test]
fn a_native_check_on_a_service_without_a_published_port_is_refused() {
    let _lock = shared();
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |text| {
        text.replace(
            "[checks]\n",
            "[checks]\ndatabase = { postgres = \"postgres\" }\n",
        )
    });
    let run = ctops(["--config", config.to_str().unwrap(), "health"])
        .run()
        .expect(2);
    assert!(
        run.stderr().contains("health check `database`")
            && run.stderr().contains("publishes no port"),
        "{}",
        run.describe()
    );
}
