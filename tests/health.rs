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
