//! `status` and `stats` report the host as it is.

use crate::util::*;

#[test]
fn status_lists_every_service_and_the_checkout() {
    let _lock = shared();
    let run = sandbox_ctops(["status", "--json"]).run().expect(0);
    let doc = run.json();
    assert_schema("status.json", &doc);
    let services: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    for s in ["api", "bot", "minio", "postgres", "redis"] {
        assert!(services.contains(&s), "{s} missing: {}", run.describe());
    }
    let commit = host(&format!(
        "git -c safe.directory='*' -C '{CHECKOUT}' rev-parse HEAD"
    ));
    assert_eq!(doc["checkout"]["commit"], commit.trim());
    let version = host(&format!("cat '{CHECKOUT}/VERSION'"));
    assert_eq!(doc["checkout"]["version"], version.trim());
    let restarts = host(&format!(
        "docker inspect -f '{{{{.RestartCount}}}}' {}",
        container("bot")
    ));
    let bot = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "bot")
        .unwrap();
    assert_eq!(bot["restarts"].to_string(), restarts.trim());
}

#[test]
fn status_for_humans_is_a_table() {
    let _lock = shared();
    let run = sandbox_ctops(["status"]).run().expect(0);
    assert!(run.stdout().starts_with("SERVICE"), "{}", run.describe());
    assert!(
        run.stderr()
            .contains("status of sandbox (trader-psy-sandbox)"),
        "{}",
        run.describe()
    );
    assert!(!run.stdout().contains('\u{1b}'), "no colour off a TTY");
}

#[test]
fn stats_reports_containers_disk_and_memory() {
    let _lock = shared();
    let run = sandbox_ctops(["stats", "--json"]).run().expect(0);
    let doc = run.json();
    assert_schema("stats.json", &doc);
    assert_eq!(
        doc["containers"].as_array().unwrap().len(),
        5,
        "{}",
        run.describe()
    );
    assert_eq!(doc["disk"][0][0], "Filesystem");
    let run = sandbox_ctops(["stats"]).run().expect(0);
    assert!(
        run.stdout().contains("Mem:") && run.stdout().contains("Filesystem"),
        "{}",
        run.describe()
    );
}

#[test]
fn verbose_echoes_every_remote_command_as_sent() {
    let _lock = shared();
    let run = sandbox_ctops(["status", "-v"]).run().expect(0);
    assert!(
        run.stderr().contains("[trader-psy-sandbox]$ sh -c"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr().contains("'/srv/ctops sandbox/trader-psy'"),
        "{}",
        run.describe()
    );
    let quiet = sandbox_ctops(["status", "-q"]).run().expect(0);
    assert!(quiet.stderr().is_empty(), "{}", quiet.describe());
}

#[test]
fn a_compose_project_other_than_the_running_one_is_refused() {
    let _lock = shared();
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |text| {
        text.replace(
            "protected = false\n",
            "protected = false\ncompose_project = \"trader\"\n",
        )
    });
    let run = ctops(["--config", config.to_str().unwrap(), "status"])
        .run()
        .expect(4);
    assert!(
        run.stderr().contains("compose project `infrastructure`")
            && run.stderr().contains("empty volumes"),
        "{}",
        run.describe()
    );
}
