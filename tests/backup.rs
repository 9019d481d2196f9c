//! Backups and restores against the sandbox's real PostgreSQL: every row comes back, a
//! damaged or failing restore leaves the database as it was.

use crate::util::*;

const BACKUPS: &str = "/srv/ctops sandbox/backups";
const TABLES: [&str; 3] = ["users", "messages", "alembic_version"];

fn psql(sql: &str) -> String {
    host(&format!(
        "docker exec {} psql -U trader -d trader_psy -tAc {}",
        container("postgres"),
        shell_word(sql)
    ))
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Every table's rows, ordered: what a restore must give back byte for byte.
fn rows() -> String {
    TABLES
        .iter()
        .map(|t| {
            let order = if *t == "alembic_version" {
                "version_num"
            } else {
                "id"
            };
            host(&format!(
                "docker exec {} psql -U trader -d trader_psy -c {}",
                container("postgres"),
                shell_word(&format!(
                    "COPY (SELECT * FROM {t} ORDER BY {order}) TO STDOUT"
                ))
            ))
        })
        .collect::<Vec<_>>()
        .join("\n--\n")
}

fn databases() -> String {
    psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
}

fn backup_db(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["backup", "db", "--json"];
    all.extend_from_slice(args);
    let run = sandbox_ctops(all).run().expect(0);
    let doc = run.json();
    assert_schema("backup.json", &doc);
    doc["backups"][0].clone()
}

fn change_the_data() {
    psql("INSERT INTO users (name) VALUES ('after the backup')");
    psql("DELETE FROM messages WHERE id = (SELECT min(id) FROM messages)");
}

#[test]
fn a_backup_restores_every_row_and_keeps_the_old_database() {
    let _lock = exclusive();
    reset_host();
    let before = rows();
    let backup = backup_db(&[]);
    let name = backup["name"].as_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_str(&host(&format!("cat '{BACKUPS}/{name}.manifest.json'"))).unwrap();
    assert_eq!(
        manifest["tables"]["public.users"]
            .as_u64()
            .unwrap()
            .to_string(),
        psql("SELECT count(*) FROM users").trim()
    );
    assert_eq!(manifest["revision"], "0002");
    assert_eq!(
        host(&format!("stat -c %a '{BACKUPS}/{name}'")).trim(),
        "640"
    );
    let verify = sandbox_ctops(["backup", "verify", "latest", "--json"])
        .run()
        .expect(0);
    let doc = verify.json();
    assert_schema("backup-verify.json", &doc);
    let users = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "rows public.users" && c["ok"] == true);
    assert!(users, "{}", verify.describe());
    let list = sandbox_ctops(["backup", "list", "--json"])
        .run()
        .expect(0)
        .json();
    assert_eq!(list["backups"][0]["verified"], true, "{list:#}");
    change_the_data();
    assert_ne!(rows(), before);
    let run = sandbox_ctops(["restore", "db", "latest", "--yes", "--json"])
        .run()
        .expect(0);
    assert_schema("restore.json", &run.json());
    assert_eq!(run.json()["outcome"], "restored", "{}", run.describe());
    assert_eq!(rows(), before, "every row as it was at the backup");
    assert!(
        databases().contains("trader_psy_before_"),
        "the old database is kept: {}",
        databases()
    );
    wait_healthy();
}

#[test]
fn a_plain_sql_backup_restores_with_the_runbooks_own_command() {
    let _lock = exclusive();
    reset_host();
    let before = rows();
    let name = backup_db(&["--format", "sql"])["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(name.ends_with(".sql"));
    // Runbook 5.3 as written, into an empty database with the writers stopped.
    let pg = container("postgres");
    host(&format!(
        "docker stop -t 2 {} {}",
        container("api"),
        container("bot")
    ));
    let _restore = Restore(vec![format!(
        "{}/tests/sandbox/sandbox.sh reset-host >/dev/null 2>&1",
        env!("CARGO_MANIFEST_DIR")
    )]);
    host(&format!("docker exec {pg} dropdb -U trader trader_psy && docker exec {pg} createdb -U trader trader_psy"));
    host(&format!(
        "ssh -F {cfg} trader-psy-sandbox \"cat '{BACKUPS}/{name}' | docker compose -f '{CHECKOUT}/infrastructure/docker-compose.yml' exec -T postgres psql -U trader trader_psy\" >/dev/null",
        cfg = sandbox().join("ssh_config").display()
    ));
    assert_eq!(rows(), before);
}

#[test]
fn a_damaged_backup_is_refused_before_the_database_is_touched() {
    let _lock = exclusive();
    reset_host();
    let name = backup_db(&[])["name"].as_str().unwrap().to_string();
    change_the_data();
    let (before, dbs) = (rows(), databases());
    // Flip one byte in the middle of the dump.
    host(&format!(
        "f='{BACKUPS}/{name}'; off=$(( $(stat -c %s \"$f\") / 2 )); b=$(dd if=\"$f\" bs=1 skip=$off count=1 2>/dev/null | od -An -tu1 | tr -d ' '); printf \"$(printf '\\\\%03o' $(( (b + 1) % 256 )))\" | dd of=\"$f\" bs=1 seek=$off conv=notrunc 2>/dev/null"
    ));
    let run = sandbox_ctops(["restore", "db", &name, "--yes"])
        .run()
        .expect(4);
    assert!(
        run.stderr().contains("does not match its checksum"),
        "{}",
        run.describe()
    );
    let verify = sandbox_ctops(["backup", "verify", &name, "--json"])
        .run()
        .expect(1);
    assert_eq!(
        verify.json()["checks"][0]["ok"],
        false,
        "{}",
        verify.describe()
    );
    assert_eq!(
        (rows(), databases()),
        (before, dbs),
        "the database was not touched"
    );
}

#[test]
fn a_restore_that_fails_half_way_leaves_the_database_as_it_was() {
    let _lock = exclusive();
    reset_host();
    backup_db(&[]);
    change_the_data();
    let before = rows();
    // The gate fails after the new database was swapped in: everything is swapped back.
    let run = sandbox_ctops(["restore", "db", "latest", "--yes", "--json"])
        .env("CTOPS_FAIL_STEP", "gate")
        .run()
        .expect(1);
    assert_schema("restore.json", &run.json());
    assert_eq!(run.json()["outcome"], "rolled-back", "{}", run.describe());
    assert_eq!(rows(), before, "the database is as it was");
    assert!(
        databases().contains("trader_psy_failed_"),
        "{}",
        databases()
    );
    wait_healthy();
}

#[test]
fn a_dump_from_another_migration_revision_needs_migrate() {
    let _lock = exclusive();
    reset_host();
    backup_db(&[]);
    sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "restore test",
    ])
    .run()
    .expect(0);
    let run = sandbox_ctops(["restore", "db", "latest", "--yes"])
        .run()
        .expect(4);
    assert!(
        run.stderr().contains("revision 0002") && run.stderr().contains("--migrate"),
        "{}",
        run.describe()
    );
    sandbox_ctops(["restore", "db", "latest", "--yes", "--migrate"])
        .run()
        .expect(0);
    assert_eq!(
        psql("SELECT version_num FROM alembic_version").trim(),
        "0003"
    );
    wait_healthy();
}

/// A tmpfs of `mib` MiB (unmounted when the guard drops) and a config whose backup_dir it is.
fn tiny_backup_dir(
    mib: u64,
) -> (
    tempfile::TempDir,
    Restore,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let tiny = tempfile::tempdir().unwrap();
    host(&format!(
        "mount -t tmpfs -o size={mib}m ctops-tiny {0} && chown deploy {0}",
        tiny.path().display()
    ));
    let unmount = Restore(vec![format!("umount {}", tiny.path().display())]);
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace(
            &format!("backup_dir = {BACKUPS:?}"),
            &format!("backup_dir = {:?}", tiny.path().display().to_string()),
        )
    });
    (tiny, unmount, dir, config)
}

#[test]
fn a_backup_dir_too_small_is_refused_up_front() {
    let _lock = exclusive();
    reset_host();
    let (tiny, _unmount, _dir, config) = tiny_backup_dir(1);
    let run = ctops(["--config", config.to_str().unwrap(), "backup", "db"])
        .run()
        .expect(4);
    assert!(
        run.stderr().contains("not enough space"),
        "{}",
        run.describe()
    );
    assert_eq!(
        host(&format!("ls -A {}", tiny.path().display())).trim(),
        "",
        "nothing written"
    );
}

#[test]
fn a_download_is_checked_against_the_manifest() {
    let _lock = exclusive();
    reset_host();
    let run = sandbox_ctops(["backup", "db", "--download", "--json"])
        .run()
        .expect(0);
    let doc = run.json();
    let name = doc["backups"][0]["name"].as_str().unwrap();
    let local = sandbox().join("local-backups/db").join(name);
    let sha = host(&format!("sha256sum '{}' | cut -d' ' -f1", local.display()));
    assert_eq!(doc["backups"][1]["place"], "local");
    assert_eq!(doc["backups"][0]["sha256"], sha.trim());
    let list = sandbox_ctops(["backup", "list", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("backup.json", &list);
    let places: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["place"].as_str().unwrap())
        .collect();
    assert!(
        places.contains(&"host") && places.contains(&"local"),
        "{list:#}"
    );
}

#[test]
fn env_backups_are_private_and_never_printed() {
    let _lock = exclusive();
    reset_host();
    let env = host(&format!("cat '{CHECKOUT}/infrastructure/.env'"));
    let first = sandbox_ctops(["backup", "env", "-v"]).run().expect(0);
    let second = sandbox_ctops(["backup", "env", "--json"]).run().expect(0);
    assert!(
        second.stderr().contains("unchanged"),
        "{}",
        second.describe()
    );
    let copies = host(&format!("ls '{BACKUPS}/env'"));
    assert_eq!(
        copies.lines().count(),
        1,
        "a copy only when it changed: {copies}"
    );
    let copy = format!("{BACKUPS}/env/{}", copies.trim());
    assert_eq!(host(&format!("stat -c %a '{copy}'")).trim(), "600");
    assert_eq!(host(&format!("cat '{copy}'")), env);
    for line in env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v)
        .filter(|v| v.len() > 6)
    {
        for run in [&first, &second] {
            assert!(
                !run.stdout().contains(line) && !run.stderr().contains(line),
                "a value leaked: {}",
                run.describe()
            );
        }
    }
}

/// Copies of a real backup, made to look `days` old (name and manifest).
fn fake_old_backups(source: &str, days: std::ops::RangeInclusive<u32>) {
    for d in days {
        host(&format!(
            r#"cd '{BACKUPS}' && created=$(date -u -d '-{d} days -1 hour' +%Y-%m-%dT%H:%M:%SZ) && n="db-$(date -u -d '-{d} days -1 hour' +%Y%m%dT%H%M%SZ)-old.dump" && cp '{source}' "$n" && sed "s/\"name\":\"[^\"]*\"/\"name\":\"$n\"/; s/\"created\":\"[^\"]*\"/\"created\":\"$created\"/" '{source}.manifest.json' > "$n.manifest.json""#
        ));
    }
}

fn backup_count() -> usize {
    host(&format!("ls '{BACKUPS}'/*.manifest.json | wc -l"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn retention_keeps_a_week_and_a_failed_backup_prunes_nothing() {
    let _lock = exclusive();
    reset_host();
    let name = backup_db(&[])["name"].as_str().unwrap().to_string();
    fake_old_backups(&name, 1..=10);
    assert_eq!(backup_count(), 11);

    // A backup that fails (postgres stopped) prunes nothing, and says so in one line.
    let pg = container("postgres");
    host(&format!("docker stop -t 2 {pg}"));
    let restart = Restore(vec![format!("docker start {pg}")]);
    let run = sandbox_ctops(["backup", "all"]).run().expect(1);
    assert_eq!(
        run.stderr()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{}",
        run.describe()
    );
    assert_eq!(backup_count(), 11);
    drop(restart);

    let listed = sandbox_ctops(["backup", "prune", "--dry-run", "--json"])
        .run()
        .expect(0)
        .json();
    assert_eq!(
        listed["backups"].as_array().unwrap().len(),
        4,
        "7 days are kept (today and the six before): days 7 to 10 go: {listed:#}"
    );
    assert_eq!(backup_count(), 11, "a dry run removes nothing");
    sandbox_ctops(["backup", "prune"]).run().expect(4);
    assert_eq!(backup_count(), 11, "no TTY and no --yes: nothing removed");

    // backup all: a new backup, then the policy (7 days); silent on success.
    let run = sandbox_ctops(["backup", "all"]).run().expect(0);
    assert!(
        run.stdout().is_empty() && run.stderr().is_empty(),
        "{}",
        run.describe()
    );
    assert_eq!(backup_count(), 12 - 4);

    // Whatever the policy, the newest good backup survives.
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace("[backup.db]\n", "[backup.db]\nkeep_days = 0\n")
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    ctops([
        "--config",
        config.to_str().unwrap(),
        "backup",
        "prune",
        "--yes",
    ])
    .run()
    .expect(0);
    assert_eq!(backup_count(), 1);
    let newest = sandbox_ctops(["backup", "list", "--json"])
        .run()
        .expect(0)
        .json();
    assert!(!newest["backups"][0]["name"]
        .as_str()
        .unwrap()
        .contains("-old"));
}

fn api_app_mode() -> String {
    let body = host("curl -s -m 4 http://127.0.0.1:18000/config");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["app_mode"].as_str().unwrap_or_default().to_string()
}

#[test]
fn restore_env_puts_a_copy_back_and_recreates_what_reads_it_or_undoes_itself() {
    let _guard = exclusive();
    reset_host();
    let env_path = format!("{CHECKOUT}/infrastructure/.env");
    let original = std::fs::read(&env_path).unwrap();
    let stat = |p: &str| host(&format!("stat -c '%a %U' '{p}'")).trim().to_string();
    sandbox_ctops(["backup", "env"]).run().expect(0);

    // A change made by hand, applied the right way (recreated, not restarted).
    host(&format!(
        "sed -i 's/^APP_MODE=.*/APP_MODE=changed-by-hand/' '{env_path}' && \
         runuser -u deploy -- sh -c 'cd \"{CHECKOUT}\" && docker compose -f infrastructure/docker-compose.yml up -d api' >/dev/null 2>&1"
    ));
    wait_until(
        "the api to serve the changed .env",
        std::time::Duration::from_secs(30),
        || {
            host_ok("curl -sf -m 2 http://127.0.0.1:18000/config")
                && api_app_mode() == "changed-by-hand"
        },
    );
    let redis_before = container("redis");

    let run = sandbox_ctops(["restore", "env", "latest"]).run().expect(4);
    assert!(run.stderr().contains("--yes"), "{}", run.describe());
    let run = sandbox_ctops(["restore", "env", "latest", "--yes"]).run();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_eq!(
        std::fs::read(&env_path).unwrap(),
        original,
        "the copy is back byte for byte"
    );
    assert_eq!(stat(&env_path), "600 deploy");
    assert_eq!(
        api_app_mode(),
        "normal",
        "the api was recreated and reads the copy"
    );
    assert_eq!(
        container("redis"),
        redis_before,
        "a service that does not read .env stays"
    );
    let copies = host(&format!(
        "grep -l changed-by-hand '{BACKUPS}'/env/env-* | wc -l"
    ));
    assert_eq!(copies.trim(), "1", "the changed .env was copied first");
    assert!(!run.stdout().contains("normal") && !run.stderr().contains("PASSWORD="));

    // A copy that breaks the api (it listens elsewhere): the gate fails, the previous file
    // is back, the services recreated and healthy.
    let broken = format!("{BACKUPS}/env/env-20200101T000000Z");
    host(&format!(
        "sed 's/^APP_MODE=.*/APP_MODE=broken\\nAPI_PORT=18009/' '{env_path}' > '{broken}' && \
         chown deploy:deploy '{broken}' && chmod 600 '{broken}'"
    ));
    let run = sandbox_ctops(["restore", "env", "env-20200101T000000Z", "--yes", "--json"]).run();
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("previous .env is back"),
        "{}",
        run.describe()
    );
    assert_schema("env-change.json", &run.json());
    assert_eq!(std::fs::read(&env_path).unwrap(), original);
    assert_eq!(stat(&env_path), "600 deploy");
    assert_eq!(api_app_mode(), "normal");
    sandbox_ctops(["health"]).run().expect(0);
    let left = host(&format!(
        "git -c safe.directory='*' -C '{CHECKOUT}' status --porcelain --ignored; ls '/srv/ctops sandbox/state'"
    ));
    assert!(
        !left.contains("before"),
        "a temporary copy was left: {left}"
    );
}

/// Backup files on the host: every dump has its manifest, no temporary file is left, and
/// the checksums recorded in `sums` (`sha256sum` lines) still hold.
fn assert_no_partial_backup(sums: &str, context: &str) {
    let files = host(&format!("ls -A '{BACKUPS}'"));
    for f in files.lines() {
        assert!(
            !f.starts_with(".tmp-"),
            "{context}: temporary file left: {f}"
        );
        if f.starts_with("db-") && !f.ends_with(".manifest.json") && !f.ends_with(".verified") {
            assert!(
                files.lines().any(|g| g == format!("{f}.manifest.json")),
                "{context}: {f} has no manifest but was kept"
            );
        }
    }
    assert!(
        host_ok(&format!(
            "cd '{BACKUPS}' && printf '%s' '{sums}' | sha256sum -c --quiet -"
        )),
        "{context}: an earlier backup changed"
    );
    wait_until(
        &format!("{context}: no pg_dump left running"),
        std::time::Duration::from_secs(10),
        || processes_matching("pg_dump -U").is_empty(),
    );
}

fn earlier_sums() -> String {
    host(&format!("cd '{BACKUPS}' && sha256sum db-*"))
}

#[test]
fn named_fault_points_leave_no_partial_backup_and_earlier_ones_intact() {
    let _lock = exclusive();
    reset_host();
    backup_db(&[]);
    let sums = earlier_sums();
    for point in [
        "before-first-byte",
        "mid-stream",
        "before-flush",
        "after-rename",
    ] {
        let run = sandbox_ctops(["backup", "db"])
            .env("CTOPS_FAULT", point)
            .run();
        assert_ne!(run.code(), 0, "{}", run.describe());
        assert!(
            run.stderr().contains(&format!("fault injected: {point}")),
            "{}",
            run.describe()
        );
        assert_eq!(backup_count(), 1, "{point}: a killed backup is not counted");
        let listed = sandbox_ctops(["backup", "list", "--json"])
            .run()
            .expect(0)
            .json();
        let db = listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "db")
            .count();
        assert_eq!(db, 1, "{point}: backup list shows only the good backup");
        // The next run sweeps what the killed one left.
        backup_db(&[]);
        assert_no_partial_backup(&sums, point);
        // Back to the one earlier backup for the next point.
        let newest = host(&format!(
            "cd '{BACKUPS}' && ls -1 db-*.manifest.json | sort | tail -n 1"
        ));
        let newest = newest.trim().trim_end_matches(".manifest.json");
        host(&format!(
            "cd '{BACKUPS}' && rm -f '{newest}' '{newest}.manifest.json'"
        ));
    }

    // Killed before pruning (backup all): nothing pruned, the old backups still there.
    fake_old_backups(
        host(&format!("cd '{BACKUPS}' && ls db-*.dump | head -n 1")).trim(),
        8..=9,
    );
    let before = backup_count();
    let run = sandbox_ctops(["backup", "all"])
        .env("CTOPS_FAULT", "before-prune")
        .run();
    assert!(!run.output.status.success(), "{}", run.describe());
    assert_eq!(
        backup_count(),
        before + 1,
        "the new backup counts, nothing was pruned"
    );
}

/// A small deterministic generator (xorshift), so a failing run can be repeated by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kills_at_random_times_leave_no_partial_backup() {
    let _lock = exclusive();
    reset_host();
    let seed = std::env::var("CTOPS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill times seeded with CTOPS_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let whole = sandbox_ctops(["backup", "db"]).run().expect(0).elapsed;
    let sums = earlier_sums();
    // Six kills that land while the backup runs. Its duration varies with the machine's
    // load (other tests run beside this one), so a kill that came after a quick backup had
    // already ended is not counted: the window shrinks and the round is tried again.
    let (mut landed, mut window) = (0, whole.as_millis() as u64 * 9 / 10);
    for round in 0..30 {
        if landed == 6 {
            break;
        }
        let delay = std::time::Duration::from_millis(rng.next() % window.max(1));
        let context = format!("seed {seed}, round {round}, kill after {delay:?}");
        let (mut child, _home) = sandbox_ctops(["backup", "db"]).spawn();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            window = window * 3 / 4;
            continue;
        }
        child.kill().unwrap();
        if child.wait().unwrap().success() {
            // It ended between the look and the kill.
            window = window * 3 / 4;
            continue;
        }
        landed += 1;
        // The next invocation sweeps the killed one's connection and leftovers.
        let run = sandbox_ctops(["backup", "db"]).run();
        assert_eq!(run.code(), 0, "{context}: {}", run.describe());
        assert_no_partial_backup(&sums, &context);
    }
    assert_eq!(
        landed, 6,
        "seed {seed}: six kills landed while a backup ran"
    );
}

#[test]
fn a_backup_dir_that_fills_mid_way_fails_cleanly() {
    let _lock = exclusive();
    reset_host();
    // 60 MB of text PostgreSQL stores compressed (well under the space check's needs) but a
    // plain SQL dump writes out in full: the check passes, the disk fills during the dump.
    psql("CREATE TABLE ctops_big AS SELECT repeat('calm', 15000000) AS t");
    let _drop = Restore(vec![format!(
        "docker exec {} psql -U trader -d trader_psy -c 'DROP TABLE IF EXISTS ctops_big'",
        container("postgres")
    )]);
    let size: u64 = psql("SELECT pg_database_size(current_database())")
        .trim()
        .parse()
        .unwrap();
    let fs_mib = (size + size / 5 + 16 * 1024 * 1024) / (1024 * 1024) + 12;
    let (tiny, _unmount, _dir, config) = tiny_backup_dir(fs_mib);
    let config = config.to_str().unwrap().to_string();
    // An earlier, small backup that must survive.
    ctops(["--config", &config, "backup", "db"]).run().expect(0);
    let earlier = host(&format!("cd {} && sha256sum db-*", tiny.path().display()));
    let run = ctops(["--config", &config, "backup", "db", "--format", "sql"]).run();
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(run.stderr().contains("full"), "{}", run.describe());
    let files = host(&format!("ls -A {}", tiny.path().display()));
    assert_eq!(
        files.lines().count(),
        2,
        "only the earlier backup and its manifest: {files}"
    );
    assert!(host_ok(&format!(
        "cd {} && printf '%s' '{earlier}' | sha256sum -c --quiet -",
        tiny.path().display()
    )));
}

/// Every folder under `root` (itself included) and every file: (path, mode) of those that are
/// not 0700 folders or 0600 files.
fn not_private(root: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut wrong = Vec::new();
    let mode = std::fs::metadata(root).unwrap().permissions().mode() & 0o777;
    if mode != 0o700 {
        wrong.push((root.display().to_string(), mode));
    }
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            wrong.extend(not_private(&path));
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if mode != 0o600 {
                wrong.push((path.display().to_string(), mode));
            }
        }
    }
    wrong
}

fn files_named(root: &std::path::Path, pred: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            found.extend(files_named(&entry.path(), pred));
        } else if pred(&name) {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

#[test]
fn off_host_copies_are_private_whatever_the_umask() {
    let _lock = exclusive();
    reset_host();
    // The usual umask, which makes new files 0644 and folders 0755 unless asked otherwise.
    // SAFETY: sets this process's file mode mask; ctops inherits it.
    unsafe {
        libc::umask(0o022);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| t);
    let config = config.to_str().unwrap();
    ctops(["--config", config, "backup", "db", "--download"])
        .run()
        .expect(0);
    ctops(["--config", config, "backup", "minio"])
        .run()
        .expect(0);
    let local = dir.path().join("local-backups");
    let dumps = files_named(&local.join("db"), &|n| n.starts_with("db-"));
    assert_eq!(dumps.len(), 2, "a dump and its manifest: {dumps:?}");
    let bodies = files_named(&local.join("minio/objects"), &|_| true);
    assert!(!bodies.is_empty(), "no object body was stored");
    assert!(
        !files_named(&local.join("minio/snapshots"), &|_| true).is_empty(),
        "no snapshot was written"
    );
    assert_eq!(not_private(&local), [], "files 0600, folders 0700");
    assert_eq!(
        files_named(&local, &|n| n.starts_with(".tmp-")),
        Vec::<String>::new(),
        "temporary files left"
    );
}

/// Shims on the deploy account's PATH for the host's hash tools, failing as a broken or
/// missing tool would; removed when dropped, however the test ends.
struct FailingHashTools {
    _dir: tempfile::TempDir,
}

const DEPLOY_BASHRC: &str = "/home/deploy/.bashrc";
const HASH_SHIM_MARK: &str = "ctops-hashfail";

impl FailingHashTools {
    fn install() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(HASH_SHIM_MARK)
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for tool in ["openssl", "sha256sum"] {
            let shim = dir.path().join(tool);
            std::fs::write(&shim, "#!/bin/sh\necho \"$0: broken\" >&2\nexit 1\n").unwrap();
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bashrc = std::fs::read_to_string(DEPLOY_BASHRC).unwrap();
        std::fs::write(
            DEPLOY_BASHRC,
            format!("export PATH={}:$PATH\n{bashrc}", dir.path().display()),
        )
        .unwrap();
        FailingHashTools { _dir: dir }
    }
}

impl Drop for FailingHashTools {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(DEPLOY_BASHRC) {
            let kept: String = text
                .lines()
                .filter(|l| !l.contains(HASH_SHIM_MARK))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(DEPLOY_BASHRC, kept);
        }
    }
}

#[test]
fn a_backup_whose_checksum_cannot_be_computed_fails_and_is_not_listed() {
    let _lock = exclusive();
    reset_host();
    let shims = FailingHashTools::install();
    let run = sandbox_ctops(["backup", "db"]).run();
    drop(shims);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(run.stderr().contains("sha256"), "{}", run.describe());
    let files = host(&format!("ls -A '{BACKUPS}'"));
    assert!(
        !files
            .lines()
            .any(|f| f.starts_with("db-") || f.starts_with(".tmp-")),
        "no manifest, no dump, no partial file: {files}"
    );
    let list = sandbox_ctops(["backup", "list", "--json"])
        .run()
        .expect(0)
        .json();
    assert!(
        !list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["kind"] == "db"),
        "{list:#}"
    );
}

#[test]
fn a_manifest_without_a_full_checksum_is_listed_as_damaged_not_a_crash() {
    let _lock = exclusive();
    reset_host();
    for (name, sha) in [
        ("db-20200101T000000Z.dump", ""),
        ("db-20200102T000000Z.dump", "abc"),
    ] {
        host(&format!(
            r#"cd '{BACKUPS}' && printf 'dump' > '{name}' && printf '%s\n' '{{"kind":"db","name":"{name}","format":"custom","sha256":"{sha}","size":4,"created":"2020-01-01T00:00:00Z","database":"trader_psy","revision":"0002","label":"","tables":{{}}}}' > '{name}.manifest.json' && chown deploy:deploy '{name}' '{name}.manifest.json'"#
        ));
    }
    let run = sandbox_ctops(["backup", "list"]).run().expect(0);
    assert_eq!(
        run.stdout().matches("damaged").count(),
        2,
        "{}",
        run.describe()
    );
    let list = sandbox_ctops(["backup", "list", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("backup.json", &list);
    assert!(
        list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["verified"] == false),
        "{list:#}"
    );
    // Neither counts as a backup, nor is either pruned (ctops does not act on them).
    sandbox_ctops(["backup", "prune", "--yes"]).run().expect(0);
    assert_eq!(backup_count(), 2);
}

/// A process that lives until dropped.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_temporary_file_of_another_users_live_process_survives_the_sweep() {
    let _lock = exclusive();
    reset_host();
    // root's process: the sweep runs as deploy, whose kill -0 on it fails with EPERM.
    let sleeper = Sleeper(
        std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap(),
    );
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let live = format!("{BACKUPS}/.tmp-{}-db-20200101T000000Z.dump", sleeper.0.id());
    let stale = format!("{BACKUPS}/.tmp-{dead}-db-20200101T000000Z.dump");
    host(&format!("printf x > '{live}' && printf x > '{stale}'"));
    backup_db(&[]);
    assert!(
        host_ok(&format!("[ -e '{live}' ]")),
        "a live writer's file was removed"
    );
    assert!(
        !host_ok(&format!("[ -e '{stale}' ]")),
        "a dead writer's file was kept"
    );
}
