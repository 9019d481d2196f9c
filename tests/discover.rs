//! Never guess on production (SPEC principle 9): a fact ctops cannot read stops a changing
//! command before its first change, and the database is compared before and after.

use crate::util::*;

const BACKUPS: &str = "/srv/ctops sandbox/backups";

fn psql(sql: &str) -> String {
    host(&format!(
        "docker exec {} psql -U trader -d trader_psy -tAc \"{sql}\"",
        container("postgres")
    ))
    .trim()
    .to_string()
}

/// What must not move when a deploy refuses: revision, rows, schema, checked-out commit.
fn database_and_checkout() -> (String, String, String, String) {
    (
        psql("SELECT version_num FROM alembic_version"),
        psql("SELECT count(*) FROM users"),
        psql("SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'public'"),
        host(&format!("git -c safe.directory='*' -C '{CHECKOUT}' rev-parse HEAD")),
    )
}

/// `deploy --ref v1.27.0` with the sandbox config edited by `edit`: must refuse (exit 2 or
/// 4) naming `key`, with the database and the checkout as they were.
fn deploy_refuses_with(edit: impl FnOnce(String) -> String, key: &str) {
    let _lock = exclusive();
    reset_host();
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), edit);
    psql("INSERT INTO users (name) VALUES ('written just before')");
    let before = database_and_checkout();
    let run = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "test",
    ])
    .env("CTOPS_CONFIG", &config)
    .run();
    assert!(
        [2, 4].contains(&run.code()),
        "refused before any change: {}",
        run.describe()
    );
    assert!(
        run.stderr().contains(key),
        "names `{key}`: {}",
        run.describe()
    );
    assert_eq!(database_and_checkout(), before, "{}", run.describe());
    let status = sandbox_ctops(["lock", "status", "--json"]).run().expect(0);
    assert_eq!(status.json()["held"], false);
}

#[test]
fn a_deploy_whose_versions_folder_is_missing_refuses_and_leaves_the_database() {
    deploy_refuses_with(
        |c| format!("{c}\n[deploy.migrate]\nversions = \"no/such/folder\"\n"),
        "deploy.migrate.versions",
    );
}

#[test]
fn a_deploy_whose_versions_folder_holds_no_revision_never_downgrades_to_base() {
    // `api/` exists at every ref and holds no revision script: read naively, the target's
    // head would be "none" and the plan a downgrade to base that drops every table.
    deploy_refuses_with(
        |c| format!("{c}\n[deploy.migrate]\nversions = \"api\"\n"),
        "deploy.migrate.versions",
    );
}

#[test]
fn a_deploy_whose_revision_query_fails_refuses_and_leaves_the_database() {
    // A port nothing listens on: the revision cannot be read, which is not "no revision".
    deploy_refuses_with(
        |c| c.replace("[backup.db]\n", "[backup.db]\nport = 5999\n"),
        "backup.db",
    );
}

#[test]
fn a_rollback_that_downgrades_takes_a_verified_pre_rollback_backup_first() {
    let _lock = exclusive();
    reset_host();
    sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "test",
    ])
    .run()
    .expect(0);
    assert_eq!(psql("SELECT version_num FROM alembic_version"), "0003");
    psql("INSERT INTO users (name) VALUES ('written just before the rollback')");
    let run = sandbox_ctops(["rollback", "--yes", "--json"])
        .run()
        .expect(0);
    let steps: Vec<String> = run.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "ok")
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    let at = |name: &str| steps.iter().position(|s| s == name);
    assert!(
        at("backup").unwrap() < at("downgrade").unwrap(),
        "the backup comes before the downgrade: {steps:?}"
    );
    assert_eq!(psql("SELECT version_num FROM alembic_version"), "0002");
    let manifest = host(&format!(
        "cat '{BACKUPS}'/db-*-pre-rollback.dump.manifest.json"
    ));
    let manifest: serde_json::Value = serde_json::from_str(manifest.trim()).unwrap();
    assert_eq!(manifest["revision"], "0003", "taken before the downgrade");
    let name = manifest["name"].as_str().unwrap().to_string();
    sandbox_ctops(["backup", "verify", &name]).run().expect(0);
    // The backup holds the row written just before (its data, read back by pg_restore).
    let rows = host(&format!(
        "docker exec -i {c} pg_restore -f - < '{BACKUPS}/{name}' | grep -c 'written just before the rollback'",
        c = container("postgres")
    ));
    assert_eq!(rows.trim(), "1", "the backup holds the last row written");
}

/// The plans ctops really renders (an upgrade with its backup and heads check, a downgrade
/// with its pre-rollback backup), on both sandbox profiles: `shellcheck` and `dash -n` clean.
#[test]
fn rendered_deploy_plans_of_both_profiles_are_shellcheck_clean() {
    let _lock = shared();
    let _lock2 = crate::util2::shared2();
    let plans = [
        (sandbox_config(), "v1.27.0"),
        (sandbox_config(), "v1.25.0"),
        (crate::util2::second_config(), "r4-half"),
        (crate::util2::second_config(), "r1"),
    ];
    for (config, reference) in plans {
        let run = ctops([
            "deploy",
            "--ref",
            reference,
            "--dry-run",
            "--skip-preflight",
            "--reason",
            "test",
        ])
        .env("CTOPS_CONFIG", &config)
        .run()
        .expect(0);
        let script = run.stdout();
        assert!(script.starts_with("#!/bin/sh"), "{}", run.describe());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.sh");
        std::fs::write(&path, &script).unwrap();
        for checker in ["shellcheck -s sh", "dash -n"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{checker} '{}'", path.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{checker} on the plan for {reference}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            script.contains("run_step forward backup"),
            "every plan that moves the schema backs up first ({reference})"
        );
        assert!(script.contains("s_heads()"), "heads checked ({reference})");
    }
}
