//! The detached runner against the sandbox: a failed plan frees the lock, a killed runner
//! leaves a lock that lapses, a restore swaps both databases or neither, whatever a client
//! outside `writers` does, and what the runner writes has the modes it should.

use std::time::{Duration, Instant};

use crate::util::*;

const STATE_DIR: &str = "/srv/ctops sandbox/state";

fn last_op() -> String {
    host(&format!("cat '{STATE_DIR}/last'")).trim().to_string()
}

fn op_file(op: &str, file: &str) -> String {
    format!("{STATE_DIR}/ops/{op}/{file}")
}

fn mode(path: &str) -> String {
    host(&format!("stat -c %a '{path}'")).trim().to_string()
}

fn health_version() -> String {
    let body = host("curl -s -m 5 http://127.0.0.1:18000/health");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("/health: {body}"));
    v["version"].as_str().unwrap_or_default().to_string()
}

/// The runner's processes (the runner and its lease renewer share its command line).
fn runner_processes(op: &str) -> Vec<String> {
    processes_matching(&op_file(op, "script.sh"))
}

/// Defect 1: the running commit with nothing stopped plans one `gate` step, which sets no
/// flag; the runner read that flag, `set -u` stopped it before it freed the lock, and its
/// renewer kept the lock live for ever (exit 6, `lock release` refused).
#[test]
fn a_failed_deploy_that_changed_nothing_exits_1_and_leaves_the_host_unlocked() {
    let _lock = exclusive();
    reset_host();
    let commit = head_commit();
    let run = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.26.0",
        "--skip-preflight",
        "--reason",
        "gate-only failure",
        "--json",
    ])
    .env("CTOPS_FAIL_STEP", "gate")
    .run()
    .expect(1);
    let doc = run.json();
    assert_schema("deploy.json", &doc);
    assert_eq!(doc["outcome"], "failed", "{}", run.describe());
    let steps: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "start")
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["gate"], "a gate-only plan: {}", run.describe());
    let op = last_op();
    let log = host(&format!("cat '{}'", op_file(&op, "runner.log")));
    assert!(!log.contains("parameter not set"), "runner.log: {log}");
    assert!(!lock_held(), "the lock is free");
    wait_until("the renewer to stop", Duration::from_secs(10), || {
        runner_processes(&op).is_empty()
    });
    assert_eq!(head_commit(), commit, "the host is as it was");
    assert_eq!(health_version(), "1.26.0");
    // Defect 9: what may hold derived secrets is the runner's alone; what the other
    // operators append to stays group-writable.
    for private in ["script.sh", "runner.log", "output.log", "gate.log"] {
        assert_eq!(mode(&op_file(&op, private)), "600", "{private}");
    }
    for shared in [
        op_file(&op, "journal"),
        format!("{STATE_DIR}/audit.jsonl"),
        format!("{STATE_DIR}/releases.jsonl"),
    ] {
        let m = u32::from_str_radix(&mode(&shared), 8).unwrap();
        assert_eq!(m & 0o060, 0o060, "{shared}: {m:o}");
    }
}

/// Defect 1: a runner that dies (here `kill -9` of its pid alone: its process group would
/// take the renewer with it and prove nothing) leaves a lock that lapses within one lease,
/// and `lock release` releases it then. CTOPS_LOCK_LEASE (the lock's test hook) shortens the lease.
#[test]
fn a_runner_killed_with_sigkill_leaves_a_lock_that_lapses_and_lock_release_frees() {
    let _lock = exclusive();
    reset_host();
    let lease = 4;
    let (child, _home) = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.26.0",
        "--skip-preflight",
        "--reason",
        "killed runner",
    ])
    .env("CTOPS_STEP_DELAY", "60")
    .env("CTOPS_LOCK_LEASE", lease.to_string())
    .spawn();
    wait_until("the gate step to start", Duration::from_secs(60), || {
        host_ok(&format!(
            "grep -q '\tstart\tgate\t' '{STATE_DIR}'/ops/*/journal 2>/dev/null"
        ))
    });
    let op = last_op();
    // The runner renewed the lease as it started: the lock stays readable by the group.
    let lock_mode = u32::from_str_radix(&mode(&format!("{STATE_DIR}/lock")), 8).unwrap();
    assert_eq!(lock_mode & 0o040, 0o040, "lock: {lock_mode:o}");
    let pid = host(&format!("cat '{}'", op_file(&op, "pid")))
        .trim()
        .to_string();
    // The step's `sleep` (CTOPS_STEP_DELAY) outlives the runner: stop it after the test.
    let sleeper = host(&format!("pgrep -P {pid} -x sleep || true"));
    let _cleanup = Restore(
        sleeper
            .lines()
            .map(|p| format!("kill {p} 2>/dev/null"))
            .collect(),
    );
    host(&format!("kill -9 {pid}"));
    let killed = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "the renewer to notice the runner is gone",
        Duration::from_secs(10),
        || runner_processes(&op).is_empty(),
    );
    let release = loop {
        let run = sandbox_ctops(["lock", "release", "--yes"]).run();
        if run.code() == 0 || killed.elapsed() > Duration::from_secs(lease + 10) {
            break run;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let release = release.expect(0);
    assert!(
        killed.elapsed() <= Duration::from_secs(lease + 3),
        "released only after {:?}: {}",
        killed.elapsed(),
        release.describe()
    );
    assert!(!lock_held());
    assert_eq!(health_version(), "1.26.0", "nothing changed");
}

/// The sandbox database as psql in the postgres container sees it.
fn psql(sql: &str) -> String {
    host(&format!(
        "docker exec {} psql -U trader -d postgres -tAc \"{}\"",
        container("postgres"),
        sql.replace('"', "\\\"")
    ))
    .trim()
    .to_string()
}

fn users() -> String {
    host(&format!(
        "docker exec {} psql -U trader -d trader_psy -tAc 'SELECT count(*) FROM users'",
        container("postgres")
    ))
    .trim()
    .to_string()
}

/// Sessions of the pool outside `writers`: enough that one is always connected.
const POOL: usize = 4;

/// Defect 3: a client outside `writers` (a pool that reconnects at once) made the rename
/// fail; the steps' status was only their last command's and SWAPPED was set before the
/// swap, so `swap_back` could rename the live database away. Now nobody can connect while
/// the two renames happen in one transaction.
#[test]
fn a_restore_while_a_client_outside_writers_keeps_reconnecting_swaps_both_or_neither() {
    let _lock = exclusive();
    reset_host();
    sandbox_ctops(["backup", "db"]).run().expect(0);
    let backed_up = users();
    host(&format!(
        "docker exec {} psql -U trader -d trader_psy -c \"INSERT INTO users (name) VALUES ('after the backup')\"",
        container("postgres")
    ));
    assert_ne!(users(), backed_up);
    // A pool of clients, each reconnecting as soon as its session ends, until the stop file.
    let pg = container("postgres");
    let stop = "/tmp/ctops-test-stop-pool";
    host(&format!("docker exec {pg} rm -f {stop}"));
    let _stop = Restore(vec![format!("docker exec {pg} touch {stop}")]);
    for _ in 0..POOL {
        host(&format!(
            "docker exec -d -e PGAPPNAME=outside-writers {pg} sh -c 'end=$(( $(date +%s) + 180 )); while [ ! -e {stop} ] && [ $(date +%s) -lt $end ]; do psql -U trader -d trader_psy -qc \"SELECT pg_sleep(10)\" >/dev/null 2>&1; sleep 0.01; done'"
        ));
    }
    wait_until("the pool to connect", Duration::from_secs(20), || {
        psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outside-writers' AND datname = 'trader_psy'") == POOL.to_string()
    });
    let run = sandbox_ctops(["restore", "db", "latest", "--yes", "--json"]).run();
    let databases = psql(
        "SELECT string_agg(datname || ':' || datallowconn, ',' ORDER BY datname) FROM pg_database",
    );
    assert_eq!(run.code(), 0, "{}\n{databases}", run.describe());
    assert_eq!(run.json()["outcome"], "restored", "{}", run.describe());
    assert_eq!(users(), backed_up, "the backup's rows are live");
    assert!(databases.contains("trader_psy:true"), "{databases}");
    let before = databases
        .split(',')
        .find(|d| d.starts_with("trader_psy_before_"))
        .unwrap_or_else(|| panic!("the old database is kept: {databases}"));
    assert!(
        before.ends_with(":true"),
        "the safety copy takes connections again: {databases}"
    );
    wait_until("the pool to reconnect", Duration::from_secs(30), || {
        psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outside-writers' AND datname = 'trader_psy'") != "0"
    });
}

/// Defect 3, deterministically: the first rename of the swap fails (here the safety copy's
/// name is taken, as a session that would not leave would make it fail). Before, the step's
/// status was its last command's and SWAPPED was set before it ran, so `swap_back` renamed
/// the live database away and put another one in its place. Now both renames are one
/// transaction: a failed swap renames nothing, and the live database stays where it was.
#[test]
fn a_restore_whose_first_rename_fails_leaves_the_live_database_in_place() {
    let _lock = exclusive();
    reset_host();
    sandbox_ctops(["backup", "db"]).run().expect(0);
    host(&format!(
        "docker exec {} psql -U trader -d trader_psy -c \"INSERT INTO users (name) VALUES ('after the backup')\"",
        container("postgres")
    ));
    let live = users();
    // The safety copy is named after the operation's second: take every name it may get.
    let now: i64 = host("date -u +%s").trim().parse().unwrap();
    let names: Vec<String> = (now - 2..now + 60)
        .map(|t| {
            let stamp = host(&format!("date -u -d @{t} +%Y%m%dt%H%M%Sz"));
            format!("trader_psy_before_{}", stamp.trim())
        })
        .collect();
    let pg = container("postgres");
    let sql = |verb: &str| {
        names
            .iter()
            .map(|n| format!("{verb} DATABASE \"{n}\";"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    host(&format!(
        "printf '%s\\n' '{}' | docker exec -i {pg} psql -q -U trader -d postgres >/dev/null",
        sql("CREATE")
    ));
    let _drop = Restore(vec![format!(
        "printf '%s\\n' '{}' | docker exec -i {pg} psql -q -U trader -d postgres >/dev/null 2>&1",
        sql("DROP").replace("DROP DATABASE", "DROP DATABASE IF EXISTS")
    )]);
    let run = sandbox_ctops(["restore", "db", "latest", "--yes", "--json"]).run();
    let databases = psql(
        "SELECT string_agg(datname || ':' || datallowconn, ',' ORDER BY datname) FROM pg_database",
    );
    assert_eq!(run.code(), 1, "{}\n{databases}", run.describe());
    assert_eq!(run.json()["outcome"], "rolled-back", "{}", run.describe());
    assert_eq!(users(), live, "the live database is the one that was live");
    assert!(databases.contains("trader_psy:true"), "{databases}");
    let fail = run.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "fail")
        .cloned()
        .unwrap();
    assert_eq!(fail["step"], "swap", "{}", run.describe());
}

/// The journal says its format first; a ctops that finds a format it does not know (a newer
/// ctops ran there) refuses to change the host, names the format and says to upgrade.
#[test]
fn a_journal_of_an_unknown_format_stops_a_change_before_it_starts() {
    let _lock = exclusive();
    reset_host();
    let commit = head_commit();
    host(&format!(
        "mkdir -p '{STATE_DIR}/ops/future-op' && printf 'x\\t0\\tformat\\t99\\nx\\t0\\tbegin\\tdeploy\\tfrom the future\\n' > '{STATE_DIR}/ops/future-op/journal' && printf future-op > '{STATE_DIR}/last' && chown -R deploy: '{STATE_DIR}'"
    ));
    let run = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "format",
    ])
    .run()
    .expect(4);
    assert!(
        run.stderr().contains("\"99\"") && run.stderr().contains("upgrade ctops"),
        "{}",
        run.describe()
    );
    assert_eq!(head_commit(), commit, "nothing changed");
    assert!(!lock_held(), "the lock it took is released");
    reset_host();
}
