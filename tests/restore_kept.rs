//! `restore db` checks for room where PostgreSQL keeps its data, drops a loaded copy it never
//! swapped in, and lists and drops (only) the copies restores kept.

use crate::util::*;

fn psql(sql: &str) -> String {
    host(&format!(
        "docker exec {} psql -U trader -d trader_psy -tAc \"{sql}\"",
        container("postgres"),
    ))
}

fn databases() -> String {
    psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
        .trim()
        .to_string()
}

fn users() -> String {
    psql("SELECT count(*) || ':' || coalesce(max(id), 0) FROM users")
}

fn backup() {
    sandbox_ctops(["backup", "db"]).run().expect(0);
}

#[test]
fn a_restore_without_room_for_a_second_copy_is_refused_up_front() {
    let _lock = exclusive();
    reset_host();
    backup();
    psql("INSERT INTO users (name) VALUES ('after the backup')");
    let (before_rows, before_dbs) = (users(), databases());
    let dir = tempfile::tempdir().unwrap();
    // A margin no disk here has (100 TiB): the free space PostgreSQL's filesystem really
    // reports is what it is compared with.
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "[backup.db]\n",
            "[backup.db]\nrestore_min_free_mb = 104857600\n",
        )
    });
    let run = ctops([
        "--config",
        config.to_str().unwrap(),
        "restore",
        "db",
        "latest",
        "--yes",
    ])
    .run()
    .expect(4);
    assert!(
        run.stderr().contains("not enough space") && run.stderr().contains("restore_min_free_mb"),
        "{}",
        run.describe()
    );
    assert_eq!(users(), before_rows, "the data was not touched");
    assert_eq!(databases(), before_dbs, "no database was created");
    assert!(!lock_held());
}

#[test]
fn a_restore_failing_before_the_swap_drops_the_copy_it_loaded() {
    let _lock = exclusive();
    reset_host();
    backup();
    psql("INSERT INTO users (name) VALUES ('after the backup')");
    let before = users();
    let run = sandbox_ctops(["restore", "db", "latest", "--yes", "--json"])
        .env("CTOPS_FAIL_STEP", "stop_writers")
        .run()
        .expect(1);
    let doc = run.json();
    assert_eq!(doc["outcome"], "rolled-back", "{}", run.describe());
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("before the swap"),
        "{}",
        run.describe()
    );
    assert_eq!(users(), before, "the live database is as it was");
    let dbs = databases();
    assert!(
        !dbs.contains("trader_psy_restore_"),
        "the loaded copy is gone: {dbs}"
    );
    assert!(!dbs.contains("trader_psy_failed_"), "{dbs}");
    wait_healthy();
}

#[test]
fn kept_copies_are_listed_and_only_they_are_dropped_when_confirmed() {
    let _lock = exclusive();
    reset_host();
    backup();
    sandbox_ctops(["restore", "db", "latest", "--yes"])
        .run()
        .expect(0);
    let list = sandbox_ctops(["restore", "list-kept", "--json"])
        .run()
        .expect(0);
    let doc = list.json();
    assert_schema("restore-kept.json", &doc);
    let kept = doc["kept"].as_array().unwrap();
    let name = kept
        .iter()
        .find(|k| k["kind"] == "before")
        .and_then(|k| k["name"].as_str())
        .unwrap_or_else(|| panic!("{}", list.describe()))
        .to_string();
    assert!(databases().contains(&name));
    let text = sandbox_ctops(["restore", "list-kept"]).run().expect(0);
    assert!(text.stdout().contains(&name), "{}", text.describe());

    // The live database, another database and a made-up name are refused, before anything.
    for wrong in ["trader_psy", "postgres", "trader_psy_before_x;drop"] {
        sandbox_ctops(["restore", "drop-kept", wrong, "--yes"])
            .run()
            .expect(2);
    }
    // No terminal to ask on and no --yes: refused.
    sandbox_ctops(["restore", "drop-kept", &name])
        .run()
        .expect(4);
    assert!(databases().contains(&name), "still there unconfirmed");

    let run = sandbox_ctops(["restore", "drop-kept", &name, "--yes", "--json"])
        .run()
        .expect(0);
    assert_schema("restore-kept.json", &run.json());
    assert_eq!(run.json()["dropped"], name.as_str());
    assert!(!databases().contains(&name), "dropped: {}", databases());
    assert!(
        databases().split(',').any(|d| d == "trader_psy"),
        "the live database stays: {}",
        databases()
    );
    assert!(!lock_held());
    wait_healthy();
}

const BACKUPS: &str = "/srv/ctops sandbox/backups";

fn data() -> String {
    psql("SELECT (SELECT count(*) || ':' || coalesce(max(id), 0) FROM users) || '/' || (SELECT count(*) FROM messages)")
}

/// A dump made exactly as runbook 5.2 makes it (`pg_dump ... > db_YYYYMMDD.sql`), then
/// `edit` (a shell filter) applied to it.
fn runbook_dump(name: &str, edit: &str) {
    host(&format!(
        "docker exec {} pg_dump -U trader trader_psy | {edit} > '{BACKUPS}/{name}' && chown deploy '{BACKUPS}/{name}'",
        container("postgres")
    ));
}

#[test]
fn a_runbook_made_dump_is_listed_and_restored_only_when_asked_unverified() {
    let _lock = exclusive();
    reset_host();
    let before = data();
    runbook_dump("db_20260113.sql", "cat");
    // Killed half-way (no completion line), and copied through Windows (CRLF).
    runbook_dump("db_20260114.sql", "head -n 40");
    runbook_dump("db_20260115.sql", "sed 's/$/\\r/'");

    let list = sandbox_ctops(["backup", "list", "--json"]).run().expect(0);
    let doc = list.json();
    assert_schema("backup.json", &doc);
    let listed = doc["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "db_20260113.sql")
        .cloned()
        .unwrap_or_else(|| panic!("{}", list.describe()));
    assert_eq!(listed["made_by"], "runbook");
    assert_eq!(listed["verified"], false);
    let text = sandbox_ctops(["backup", "list"]).run().expect(0);
    assert!(
        text.stdout().contains("runbook (unverified)"),
        "{}",
        text.describe()
    );
    // `latest` never picks one: only manifests count there.
    sandbox_ctops(["restore", "db", "latest", "--yes"])
        .run()
        .expect(2);

    psql("INSERT INTO users (name) VALUES ('after the runbook dump')");
    let changed = data();
    assert_ne!(changed, before);
    let run = sandbox_ctops(["restore", "db", "db_20260113.sql", "--yes"])
        .run()
        .expect(2);
    assert!(run.stderr().contains("--unverified"), "{}", run.describe());
    for broken in ["db_20260114.sql", "db_20260115.sql"] {
        let run = sandbox_ctops(["restore", "db", broken, "--unverified", "--yes"])
            .run()
            .expect(4);
        assert!(run.stderr().contains("not touched"), "{}", run.describe());
        assert_eq!(data(), changed, "{broken}: the data was not touched");
    }
    let run = sandbox_ctops([
        "restore",
        "db",
        "db_20260113.sql",
        "--unverified",
        "--yes",
        "--json",
    ])
    .run()
    .expect(0);
    assert_schema("restore.json", &run.json());
    assert!(
        run.stderr().contains("made by the runbook's own command"),
        "the warning: {}",
        run.describe()
    );
    assert_eq!(data(), before, "every row as the runbook dumped it");
    assert!(databases().contains("trader_psy_before_"));
    wait_healthy();
}
