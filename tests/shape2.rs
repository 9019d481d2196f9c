//! The read-only commands against the second sandbox profile (a host laid out differently:
//! `deploy/compose.yaml`, project `calmstack`, services web/worker/db/cache, branch `trunk`,
//! a checkout path with a space, the non-root login `calm`), with the minimal config.
//! The changing commands are in `shape2_changes.rs`.

use crate::util::*;
use crate::util2::*;

#[test]
fn status_describes_the_second_host_from_the_minimal_config() {
    let _lock = shared2();
    let run = second_ctops(["status", "--json"]).run().expect(0);
    let doc = run.json();
    assert_schema("status.json", &doc);
    assert_eq!(doc["project"], PROJECT2, "{}", run.describe());
    let mut services: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    services.sort_unstable();
    assert_eq!(
        services,
        ["cache", "db", "web", "worker"],
        "{}",
        run.describe()
    );
    assert!(
        doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "running"),
        "{}",
        run.describe()
    );
    assert_eq!(doc["checkout"]["commit"], second_head_commit());
    assert_eq!(doc["checkout"]["branch"], "trunk");
    let version = host(&format!("cat '{DIR2}/VERSION'"));
    assert_eq!(doc["checkout"]["version"], version.trim());

    let run = second_ctops(["status"]).run().expect(0);
    assert!(
        run.stdout().contains(&format!("checkout {DIR2} at ")),
        "{}",
        run.describe()
    );
}

#[test]
fn health_checks_the_second_host_from_the_minimal_config() {
    let _lock = shared2();
    // reset-host leaves no backup (the backup row fails: degraded); a changing test may have
    // left one.
    let has_backup = host_ok(&format!("ls '{BACKUPS2}'/db-*.dump >/dev/null 2>&1"));
    let run = second_ctops(["health", "--json"]).run();
    let doc = run.json();
    assert_schema("health.json", &doc);
    let checks = doc["checks"].as_array().unwrap();
    let row = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` row: {}", run.describe()))
    };
    assert_eq!(row("api")["ok"], true, "{}", run.describe());
    let api = row("api")["detail"].as_str().unwrap();
    assert!(
        api.contains(&format!("version {}", second_version())),
        "{}",
        run.describe()
    );
    for service in ["web", "worker", "db", "cache"] {
        assert_eq!(
            row(&format!("service {service}"))["ok"],
            true,
            "{}",
            run.describe()
        );
    }
    let backup = row("backup db");
    assert_eq!(backup["ok"], has_backup, "{}", run.describe());
    if !has_backup {
        assert!(
            backup["detail"].as_str().unwrap().contains(BACKUPS2),
            "{}",
            run.describe()
        );
    }
    assert!(
        checks
            .iter()
            .all(|c| c["ok"] == true || c["name"] == "backup db"),
        "{}",
        run.describe()
    );
    let (status, code) = if has_backup {
        ("up", 0)
    } else {
        ("degraded", 5)
    };
    assert_eq!(doc["status"], status, "{}", run.describe());
    assert_eq!(run.code(), code, "{}", run.describe());
}

/// The fixture itself: the official image's pg_hba makes 127.0.0.1 useless as a password
/// test, which is what the rotate tests of this profile rely on.
#[test]
fn the_second_hosts_postgres_checks_passwords_on_ipv6_only() {
    let _lock = shared2();
    let password = second_env_value("APP_DB_PASSWORD");
    assert!(second_login("::1", &password));
    assert!(!second_login("::1", "not-the-password"));
    assert!(
        second_login("127.0.0.1", "not-the-password"),
        "127.0.0.1 is trusted, as in the official postgres image"
    );
    assert!(second_env_value("DATABASE_URL").contains(&format!("@[::1]:{PG_PORT2}/")));
}

/// The config says only how to reach the host and where its files are: every other fact
/// (services, migrations folder, database user and name, writers, where a password is
/// checked) is ctops's to find.
#[test]
fn the_second_config_sets_only_what_an_operator_knows() {
    let text = std::fs::read_to_string(second_config()).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let mut top: Vec<&str> = doc.keys().map(String::as_str).collect();
    top.sort_unstable();
    assert_eq!(top, ["secrets", "targets"], "{text}");
    let targets = doc["targets"].as_table().unwrap();
    assert_eq!(targets.len(), 1, "{text}");
    let target = targets.values().next().unwrap().as_table().unwrap();
    let mut keys: Vec<&str> = target.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // ssh_config: how this machine reaches the host (ssh reads ~/.ssh/config from the passwd
    // home, which the tests cannot give it); it says nothing about the host.
    assert_eq!(
        keys,
        [
            "backup_dir",
            "branch",
            "compose_file",
            "dir",
            "env_file",
            "health_url",
            "ssh",
            "ssh_config",
            "sudo"
        ],
        "{text}"
    );
}
