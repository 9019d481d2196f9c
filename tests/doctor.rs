//! `ctops doctor`: every row ok on both sandbox profiles, and each fact broken on purpose
//! (a config variant, or a file on the host put back afterwards) turns only its own row red
//! (exit 2) or yellow (exit 5); rows that need the broken fact say "skipped".

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::*;
use crate::util2::*;

const ROWS: [&str; 14] = [
    "checkout",
    "compose file",
    "compose project",
    "services",
    "migrations (deployed)",
    "migrations (branch)",
    "database",
    "pg_hba trust",
    "state_dir",
    "backup_dir",
    "free space",
    "sudo",
    "health_url",
    "clock",
];

/// Row name → level, from a `doctor --json` document checked against its schema.
fn levels(run: &Run) -> BTreeMap<String, String> {
    let doc = run.json();
    assert_schema("doctor.json", &doc);
    let rows: BTreeMap<String, String> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["level"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ROWS, "{}", run.describe());
    rows
}

/// `doctor --json` with a variant of the first sandbox's config.
fn doctor_with(dir: &Path, edit: impl FnOnce(String) -> String) -> Run {
    let config = variant_config(dir, edit);
    ctops(["doctor", "--json"])
        .env("CTOPS_CONFIG", &config)
        .run()
}

/// `row` has `level`, every other row is ok (or skipped where it needs `row`), and the exit
/// code says so.
fn assert_only(run: &Run, row: &str, level: &str, skipped: &[&str]) {
    let rows = levels(run);
    assert_eq!(rows[row], level, "{row}: {}", run.describe());
    for (name, got) in &rows {
        if name == row {
            continue;
        }
        let want = if skipped.contains(&name.as_str()) {
            "skipped"
        } else {
            "ok"
        };
        assert_eq!(got, want, "{name}: {}", run.describe());
    }
    let code = if level == "fail" { 2 } else { 5 };
    assert_eq!(run.code(), code, "{}", run.describe());
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    let fact = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == row)
        .unwrap()
        .clone();
    assert!(
        fact["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{fact}"
    );
}

#[test]
fn doctor_finds_every_fact_ok_on_the_first_sandbox() {
    let _lock = exclusive();
    reset_host();
    let run = sandbox_ctops(["doctor", "--json"]).run().expect(0);
    let rows = levels(&run);
    assert!(rows.values().all(|l| l == "ok"), "{}", run.describe());
    let doc = run.json();
    assert_eq!(
        (doc["ok"].as_bool(), doc["status"].as_str()),
        (Some(true), Some("ok"))
    );

    // The text table: one line per row, each marked ok, and no fix lines.
    let run = sandbox_ctops(["doctor"]).run().expect(0);
    let table = run.stdout();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("FACT") && lines[0].contains("STATUS"),
        "{table}"
    );
    for (line, name) in lines[1..].iter().zip(ROWS) {
        let rest = line
            .strip_prefix(name)
            .unwrap_or_else(|| panic!("{name}: {table}"));
        assert!(rest.trim_start().starts_with("ok "), "{name}: {table}");
    }
    assert_eq!(lines.len(), ROWS.len() + 1, "{table}");
    assert!(
        run.stderr().contains("doctor of sandbox"),
        "{}",
        run.describe()
    );
    assert!(table.contains(&format!("{CHECKOUT} at ")), "{table}");
}

#[test]
fn second_doctor_finds_every_fact_ok_on_the_second_sandbox() {
    let _lock = exclusive2();
    second_reset_host();
    let run = second_ctops(["doctor", "--json"]).run().expect(0);
    let rows = levels(&run);
    assert!(rows.values().all(|l| l == "ok"), "{}", run.describe());
    let doc = run.json();
    let detail = |name: &str| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // What the minimal config leaves to the host, found there.
    assert!(
        detail("compose project").contains(PROJECT2),
        "{}",
        run.describe()
    );
    assert!(detail("database").contains(DB2), "{}", run.describe());
    assert!(
        detail("database").contains(DB_SUPERUSER2),
        "{}",
        run.describe()
    );
    assert!(detail("pg_hba trust").contains("::1"), "{}", run.describe());
    assert!(
        detail("state_dir").contains(STATE_DIR2),
        "{}",
        run.describe()
    );
}

#[test]
fn doctor_with_a_wrong_checkout_dir_fails_the_checkout_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "dir = \"/srv/ctops sandbox/trader-psy\"",
            "dir = \"/srv/ctops sandbox/nowhere\"",
        )
    });
    assert_only(
        &run,
        "checkout",
        "fail",
        &[
            "compose file",
            "compose project",
            "services",
            "migrations (deployed)",
            "migrations (branch)",
            "database",
            "pg_hba trust",
            "free space",
        ],
    );
    // The text table marks it, and says what to do.
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "dir = \"/srv/ctops sandbox/trader-psy\"",
            "dir = \"/srv/ctops sandbox/nowhere\"",
        )
    });
    let text = ctops(["doctor"])
        .env("CTOPS_CONFIG", &config)
        .run()
        .expect(2);
    let out = text.stdout();
    assert!(
        out.lines()
            .any(|l| l.starts_with("checkout") && l.contains("FAIL")),
        "{}",
        text.describe()
    );
    assert!(
        out.contains("fix checkout: set `dir`"),
        "{}",
        text.describe()
    );
}

#[test]
fn doctor_with_a_wrong_compose_file_fails_the_compose_file_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "compose_file = \"infrastructure/docker-compose.yml\"",
            "compose_file = \"infrastructure/nope.yml\"",
        )
    });
    assert_only(
        &run,
        "compose file",
        "fail",
        &["compose project", "services"],
    );
}

#[test]
fn doctor_with_another_compose_project_fails_the_project_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "compose_file = \"infrastructure/docker-compose.yml\"",
            "compose_file = \"infrastructure/docker-compose.yml\"\ncompose_project = \"another\"",
        )
    });
    assert_only(&run, "compose project", "fail", &[]);
}

#[test]
fn doctor_with_a_service_the_project_lacks_fails_the_services_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace("restart = [\"bot\"]", "restart = [\"bot\", \"telegram\"]")
    });
    assert_only(&run, "services", "fail", &[]);
    assert!(run
        .stdout()
        .contains("`telegram` (in `secrets.TELEGRAM_BOT_TOKEN.restart`)"));
}

#[test]
fn doctor_with_a_wrong_versions_folder_fails_both_migration_rows() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "[deploy]\n",
            "[deploy]\nmigrate = { versions = \"nowhere/versions\" }\n",
        )
    });
    let rows = levels(&run);
    assert_eq!(rows["migrations (deployed)"], "fail", "{}", run.describe());
    assert_eq!(rows["migrations (branch)"], "fail", "{}", run.describe());
    let others = rows
        .iter()
        .filter(|(n, _)| !n.starts_with("migrations"))
        .all(|(_, l)| l == "ok");
    assert!(others, "{}", run.describe());
    assert_eq!(run.code(), 2, "{}", run.describe());
}

#[test]
fn doctor_with_a_branch_origin_lacks_fails_the_branch_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace("branch = \"main\"", "branch = \"no-such-branch\"")
    });
    assert_only(&run, "migrations (branch)", "fail", &[]);
}

#[test]
fn doctor_with_a_wrong_database_user_fails_the_database_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace("user = \"trader\"", "user = \"nobody_here\"")
    });
    // No dump yet after reset-host: free space is judged against the database's size.
    assert_only(&run, "database", "fail", &["pg_hba trust", "free space"]);
}

#[test]
fn doctor_with_a_role_no_database_url_uses_warns_on_the_pg_hba_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "postgres_role = \"trader\"",
            "postgres_role = \"someone_else\"",
        )
    });
    assert_only(&run, "pg_hba trust", "warn", &[]);
}

#[test]
fn doctor_with_a_missing_state_dir_fails_the_state_dir_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "state_dir = \"/srv/ctops sandbox/state\"",
            "state_dir = \"/srv/ctops sandbox/no-state\"",
        )
    });
    assert_only(&run, "state_dir", "fail", &[]);
    assert!(run.stdout().contains("ctops setup"), "{}", run.describe());
    assert!(!Path::new("/srv/ctops sandbox/no-state").exists());
}

#[test]
fn doctor_with_a_read_only_backup_dir_fails_the_backup_dir_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "backup_dir = \"/srv/ctops sandbox/backups\"",
            "backup_dir = \"/usr/share\"",
        )
    });
    assert_only(&run, "backup_dir", "fail", &[]);
}

#[test]
fn doctor_with_a_last_dump_bigger_than_the_free_space_warns_on_the_free_space_row() {
    use std::os::unix::fs::PermissionsExt;
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    // A backup_dir whose newest dump is 1 TiB (sparse: it takes no space).
    let backups = tempfile::tempdir().unwrap();
    std::fs::set_permissions(backups.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dump = backups.path().join("db-20260101T000000Z.dump");
    std::fs::File::create(&dump)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    std::fs::write(
        backups
            .path()
            .join("db-20260101T000000Z.dump.manifest.json"),
        "{}",
    )
    .unwrap();
    let path = backups.path().display().to_string();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "backup_dir = \"/srv/ctops sandbox/backups\"",
            &format!("backup_dir = {path:?}"),
        )
    });
    assert_only(&run, "free space", "warn", &[]);
    assert!(run.stdout().contains("1.0 TiB"), "{}", run.describe());
}

#[test]
fn doctor_with_a_sudo_prefix_the_host_refuses_fails_the_sudo_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "sudo = [\"sudo\", \"-n\"]",
            "sudo = [\"sudo\", \"-n\", \"-u\", \"no-such-user\"]",
        )
    });
    assert_only(&run, "sudo", "fail", &[]);
}

#[test]
fn doctor_with_a_health_url_nothing_answers_warns_on_the_health_row() {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let run = doctor_with(dir.path(), |t| {
        t.replace(
            "health_url = \"http://127.0.0.1:18000/health\"",
            "health_url = \"http://127.0.0.1:1/health\"",
        )
    });
    assert_only(&run, "health_url", "warn", &[]);
}

#[test]
fn doctor_with_a_clock_an_hour_off_warns_on_the_clock_row() {
    let _lock = exclusive();
    reset_host();
    let run = sandbox_ctops(["doctor", "--json"])
        .env("CTOPS_FAULT", "clock-skew")
        .run();
    assert_only(&run, "clock", "warn", &[]);
    assert!(run.stdout().contains("3600 s ahead"), "{}", run.describe());
}

#[test]
fn deploy_with_a_missing_state_dir_refuses_before_its_first_change() {
    let _lock = exclusive();
    reset_host();
    // What a deploy without this check leaves behind (it creates the folder and deploys).
    let _ = std::fs::remove_dir_all("/srv/ctops sandbox/no-state");
    let before = head_commit();
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "state_dir = \"/srv/ctops sandbox/state\"",
            "state_dir = \"/srv/ctops sandbox/no-state\"",
        )
    });
    let run = ctops([
        "deploy",
        "--skip-preflight",
        "--reason",
        "doctor test",
        "--yes",
    ])
    .env("CTOPS_CONFIG", &config)
    .run()
    .expect(4);
    let said = run.stderr();
    assert!(
        said.contains("`state_dir`: /srv/ctops sandbox/no-state does not exist"),
        "{}",
        run.describe()
    );
    assert!(
        said.contains("help: run `ctops setup`"),
        "{}",
        run.describe()
    );
    // Nothing changed: no folder made, the same commit checked out, no lock taken.
    assert!(!Path::new("/srv/ctops sandbox/no-state").exists());
    assert_eq!(head_commit(), before);
    assert!(!lock_held());
}

#[test]
fn env_set_with_a_read_only_backup_dir_refuses_before_its_first_change() {
    let _lock = exclusive();
    reset_host();
    let env = format!("{CHECKOUT}/infrastructure/.env");
    let before = std::fs::read(&env).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "backup_dir = \"/srv/ctops sandbox/backups\"",
            "backup_dir = \"/usr/share\"",
        )
    });
    let run = ctops(["env", "set", "LOG_LEVEL=debug", "--yes"])
        .env("CTOPS_CONFIG", &config)
        .run()
        .expect(4);
    assert!(
        run.stderr().contains("`backup_dir`: /usr/share"),
        "{}",
        run.describe()
    );
    assert_eq!(std::fs::read(&env).unwrap(), before, "{}", run.describe());
    assert!(!lock_held());
}
