//! The changing commands against the second sandbox profile with the minimal config: deploy
//! forward, to an older ref, rollback, the automatic rollback of a half-failing migration,
//! backup and restore of the database, rotate of the app's database password, env set.
//! Each checks the host (version, revision, tables, rows written before the step, logins),
//! not only exit codes.
//!
//! With the code of issue #11's start every one of these failed: ctops guessed
//! `migrations/versions`, the `postgres` service, user `trader`, database `trader_psy`,
//! writers `api, bot`, and proved a password over 127.0.0.1, which this host trusts.

use std::time::Duration;

use crate::util::*;
use crate::util2::*;

fn deploy2(reference: &str) -> Run {
    second_ctops([
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

/// The notes as every revision has them (`mood` comes with a2, so a downgrade drops it).
fn note_bodies() -> String {
    second_psql(DB2, "SELECT id, author, body FROM notes ORDER BY id")
}

fn assert_lock_free2() {
    let run = second_ctops(["lock", "status", "--json"]).run().expect(0);
    let doc = run.json();
    assert_schema("lock-status.json", &doc);
    assert_eq!(doc["held"], false, "{}", run.describe());
}

fn assert_app_running(context: &Run) {
    for service in ["web", "worker"] {
        assert_eq!(second_state(service), "running", "{}", context.describe());
    }
    let health = second_health();
    assert_eq!(health["database"], true, "{health}\n{}", context.describe());
}

/// The manifests of the database backups ctops took on its own (`db-*-pre-*`: before a
/// migration, before a downgrade): proof that it found the db service, its superuser and its
/// database.
fn safety_backups() -> Vec<serde_json::Value> {
    host(&format!(
        "for f in '{BACKUPS2}'/db-*-pre-*.dump.manifest.json; do [ -f \"$f\" ] && tr -d '\\n' < \"$f\" && echo; done; true"
    ))
    .lines()
    .map(|l| serde_json::from_str(l).expect("a manifest"))
    .collect()
}

/// Asserts that ctops backed the database up at `revision` before changing the schema.
fn assert_backed_up_at(revision: &str) {
    let manifests = safety_backups();
    assert!(
        manifests.iter().any(|m| m["revision"] == revision),
        "a backup at {revision} before the schema changed: {manifests:?}"
    );
}

#[test]
fn second_deploy_forward_reads_the_head_from_script_location_and_keeps_the_rows() {
    let _lock = exclusive2();
    second_reset_host();
    second_add_note("written before the deploy of r3");
    let before = second_rows();
    let run = deploy2("r3").expect(0);
    let doc = run.json();
    assert_schema("deploy.json", &doc);
    assert_eq!(
        doc["from"]["version"],
        INITIAL_VERSION2,
        "{}",
        run.describe()
    );
    assert_eq!(doc["to"]["version"], "3.2.0", "{}", run.describe());
    // r3 has no migration of its own: its head is still a2, found in
    // backend/db/migrations/versions through backend/alembic.ini's script_location.
    assert_eq!(doc["to"]["migration"], "a2", "{}", run.describe());
    assert_eq!(second_version(), "3.2.0");
    assert_eq!(second_revision(), "a2");
    assert_eq!(second_head_commit(), second_commit_of("r3"));
    assert_eq!(second_rows(), before, "every row is still there");
    assert_app_running(&run);
    assert_lock_free2();
}

#[test]
fn second_deploy_of_the_branch_follows_trunk() {
    let _lock = exclusive2();
    second_reset_host();
    let run = second_ctops(["deploy", "--skip-preflight", "--reason", "integration test"])
        .run()
        .expect(0);
    assert_eq!(
        second_head_commit(),
        second_commit_of("origin/trunk"),
        "{}",
        run.describe()
    );
    assert_eq!(
        host(&format!(
            "git -c safe.directory='*' -C '{DIR2}' rev-parse --abbrev-ref HEAD"
        ))
        .trim(),
        "trunk"
    );
    assert_eq!(second_version(), "3.2.0");
}

#[test]
fn second_deploy_to_an_older_ref_downgrades_first_and_keeps_the_rows() {
    let _lock = exclusive2();
    second_reset_host();
    second_add_note("written before the deploy of r1");
    let before = note_bodies();
    let run = deploy2("r1").expect(0);
    let doc = run.json();
    assert_schema("deploy.json", &doc);
    assert_eq!(doc["to"]["migration"], "a1", "{}", run.describe());
    assert_eq!(second_version(), "3.0.0");
    assert_eq!(second_revision(), "a1", "{}", run.describe());
    assert!(
        !second_note_columns().contains(&"mood".to_string()),
        "a2 was downgraded: {:?}",
        second_note_columns()
    );
    assert_eq!(note_bodies(), before, "every row is still there");
    assert_eq!(second_head_commit(), second_commit_of("r1"));
    assert_backed_up_at("a2");
    assert_app_running(&run);
    assert_lock_free2();
}

#[test]
fn second_rollback_returns_to_the_previous_release_and_its_schema() {
    let _lock = exclusive2();
    second_reset_host();
    second_add_note("written before the deploys");
    deploy2("r3").expect(0);
    deploy2("r1").expect(0);
    assert_eq!(
        second_revision(),
        "a1",
        "r1 runs on its own schema before the rollback"
    );
    let before = note_bodies();
    let run = second_ctops(["rollback", "--yes", "--json"])
        .run()
        .expect(0);
    assert_schema("deploy.json", &run.json());
    assert_eq!(
        second_head_commit(),
        second_commit_of("r3"),
        "{}",
        run.describe()
    );
    assert_eq!(second_version(), "3.2.0");
    assert_eq!(second_revision(), "a2", "{}", run.describe());
    assert!(second_note_columns().contains(&"mood".to_string()));
    assert_eq!(note_bodies(), before, "every row is still there");
    assert_app_running(&run);
    assert_lock_free2();
}

#[test]
fn second_a_migration_that_fails_half_way_is_rolled_back_automatically() {
    let _lock = exclusive2();
    second_reset_host();
    second_add_note("written before the half-failing deploy");
    let (rows, tables, columns) = (second_rows(), second_tables(), second_note_columns());
    // r4-half: a3 (creates tags) applies, a4 fails; a3 stays applied until ctops undoes it.
    let run = deploy2("r4-half").expect(1);
    let doc = run.json();
    assert_schema("deploy.json", &doc);
    assert_eq!(doc["rolled_back"], true, "{}", run.describe());
    assert_eq!(second_version(), INITIAL_VERSION2, "{}", run.describe());
    assert_eq!(second_revision(), INITIAL_REVISION2, "{}", run.describe());
    assert_eq!(second_tables(), tables, "a3's tags table is gone");
    assert_eq!(second_note_columns(), columns);
    assert_eq!(second_rows(), rows, "every row is still there");
    assert_eq!(second_head_commit(), second_commit_of(INITIAL_REF2));
    assert_backed_up_at(INITIAL_REVISION2);
    assert!(
        run.stderr().contains(INITIAL_VERSION2),
        "says what runs now: {}",
        run.describe()
    );
    assert_app_running(&run);
    assert_lock_free2();
}

#[test]
fn second_restore_db_brings_back_every_row_with_the_writers_stopped_then_started() {
    let _lock = exclusive2();
    second_reset_host();
    second_add_note("in the backup");
    let before = second_rows();
    let run = second_ctops(["backup", "db", "--json"]).run().expect(0);
    assert_schema("backup.json", &run.json());
    let dumps = host(&format!(
        "ls '{BACKUPS2}' | grep -c '^db-.*\\.dump$' || true"
    ));
    assert_eq!(dumps.trim(), "1", "{}", run.describe());

    second_add_note("after the backup");
    second_psql(DB2, "DELETE FROM notes WHERE id = 1");
    assert_ne!(second_rows(), before);

    let run = second_ctops(["restore", "db", "latest", "--yes", "--json"])
        .run()
        .expect(0);
    let doc = run.json();
    assert_schema("restore.json", &doc);
    assert_eq!(doc["outcome"], "restored", "{}", run.describe());
    assert_eq!(second_rows(), before, "the backup's rows, all of them");
    assert_app_running(&run);
    // The worker, which holds a connection, reads the restored database.
    let count = second_psql(DB2, "SELECT count(*) FROM notes");
    let worker = second_container("worker");
    wait_until(
        "the worker to count the restored notes",
        Duration::from_secs(30),
        || host(&format!("docker logs --tail 1 {worker} 2>&1")).contains(&format!("notes {count}")),
    );
    assert_lock_free2();
}

#[test]
fn second_rotate_sets_a_password_that_ipv6_accepts_and_refuses_the_old_one() {
    let _lock = exclusive2();
    second_reset_host();
    second_add_note("written before the rotation");
    let rows = second_rows();
    let old = second_env_value("APP_DB_PASSWORD");
    let run = second_ctops(["rotate", "APP_DB_PASSWORD", "--generate", "--yes"])
        .run()
        .expect(0);
    let new = second_env_value("APP_DB_PASSWORD");
    assert_ne!(new, old, "{}", run.describe());
    let url = second_env_value("DATABASE_URL");
    assert!(
        url.contains(&new) && !url.contains(&old),
        "DATABASE_URL follows"
    );
    // 127.0.0.1 is trusted on this host: only [::1] says which password the role has.
    assert!(second_login("::1", &new), "{}", run.describe());
    assert!(!second_login("::1", &old), "{}", run.describe());
    assert_eq!(
        host(&format!("stat -c '%a %U' '{ENV2}'")).trim(),
        "600 calm"
    );
    assert_eq!(second_rows(), rows);
    assert_app_running(&run);
    assert_lock_free2();
}

#[test]
fn second_env_set_reaches_the_services_that_read_the_file() {
    let _lock = exclusive2();
    second_reset_host();
    second_add_note("written before env set");
    let rows = second_rows();
    let run = second_ctops(["env", "set", "LOG_LEVEL=debug", "--yes"])
        .run()
        .expect(0);
    assert_eq!(second_env_value("LOG_LEVEL"), "debug");
    assert_eq!(
        host(&format!("stat -c '%a %U' '{ENV2}'")).trim(),
        "600 calm"
    );
    for service in ["web", "worker"] {
        let value = host(&format!(
            "docker exec {} printenv LOG_LEVEL",
            second_container(service)
        ));
        assert_eq!(value.trim(), "debug", "{service}: {}", run.describe());
    }
    assert_eq!(second_rows(), rows);
    assert_app_running(&run);
    assert_lock_free2();
}

#[test]
fn second_rotate_where_the_apps_address_trusts_every_password_is_applied_not_proven() {
    let _lock = exclusive2();
    second_reset_host();
    // The application connects over 127.0.0.1, which this host's pg_hba trusts: no password
    // check there can tell the new password from the old one.
    host(&format!(
        "sed 's/@\\[::1\\]:/@127.0.0.1:/' '{ENV2}' > /tmp/ctops-env2 && cat /tmp/ctops-env2 > '{ENV2}' && rm -f /tmp/ctops-env2"
    ));
    assert!(second_env_value("DATABASE_URL").contains("@127.0.0.1:"));
    let old = second_env_value("APP_DB_PASSWORD");
    let run = second_ctops(["rotate", "APP_DB_PASSWORD", "--generate", "--yes", "--json"])
        .run()
        .expect(5);
    let doc = run.json();
    assert_schema("env-change.json", &doc);
    assert_eq!(doc["proven"], false, "{}", run.describe());
    assert!(run.stderr().contains("not proven"), "{}", run.describe());
    // Applied, not undone: the role has the new password (checked where pg_hba asks).
    let new = second_env_value("APP_DB_PASSWORD");
    assert_ne!(new, old);
    assert!(second_login("::1", &new), "{}", run.describe());
    assert!(!second_login("::1", &old), "{}", run.describe());
    assert_lock_free2();
}
