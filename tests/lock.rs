//! The host lock held from the operator's machine: a keeper on the host keeps it exactly as
//! long as the operation and the commands it started run (the lease shortened by the
//! `CTOPS_LOCK_LEASE` test hook, so an operation outlives several leases in seconds).

use std::time::{Duration, Instant};

use crate::util::*;

const STATE: &str = "/srv/ctops sandbox/state";
const DUMMY: &str = "ctops-sandbox-dummy";

fn dummy_version() -> String {
    host(&format!("dpkg-query -W -f='${{Version}}' {DUMMY}"))
}

/// The lock file's `expires` on the host, if there is a lock.
fn lock_expires() -> Option<i64> {
    let text = std::fs::read_to_string(format!("{STATE}/lock")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("expires="))
        .and_then(|v| v.parse().ok())
}

/// The apt-get upgrade ctops started, if it runs.
fn apt_upgrade_running() -> bool {
    processes_matching("Dpkg::Options::=--force-confold")
        .iter()
        .any(|p| p.contains("apt-get") && !p.contains("sudo"))
}

#[test]
fn an_operation_outliving_its_lease_keeps_the_lock_held_throughout() {
    let _guard = exclusive();
    reset_host();
    // apt waits for this lock: `update system` runs for ~8 s, four 2-second leases.
    let mut locker = hold_dpkg_lock(8);
    let (mut update, _home) = sandbox_ctops(["update", "system", "--yes"])
        .env("CTOPS_LOCK_LEASE", "2")
        .spawn();
    wait_until("the lock to be taken", Duration::from_secs(20), || {
        lock_expires().is_some()
    });
    let first = lock_expires().unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        update.try_wait().unwrap().is_none(),
        "still upgrading (waiting for dpkg)"
    );
    assert!(
        lock_expires().is_some_and(|e| e > first + 1),
        "the lease was renewed: expires {first} then {:?}",
        lock_expires()
    );
    assert!(lock_held(), "held, not stale, after two leases");
    // A second operator is refused, and changes nothing.
    let run = sandbox_ctops(["restart", "bot"]).run().expect(4);
    assert!(run.stderr().contains("held by"), "{}", run.describe());
    assert!(started.elapsed() < Duration::from_secs(8));

    assert!(locker.wait().unwrap().success());
    let out = update.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dummy_version(), "2.0");
    assert!(!lock_held(), "released when it ended");
    reset_host();
}

#[test]
fn interrupting_update_system_leaves_apt_running_and_the_lock_held_until_it_ends() {
    let _guard = exclusive();
    reset_host();
    let mut locker = hold_dpkg_lock(30);
    let (update, _home) = sandbox_ctops(["update", "system", "--yes", "--json"])
        .env("CTOPS_LOCK_LEASE", "3")
        .spawn();
    wait_until(
        "apt-get upgrade to start (and wait for dpkg)",
        Duration::from_secs(30),
        apt_upgrade_running,
    );
    host(&format!("kill -INT {}", update.id()));
    let out = update.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_schema("error.json", &doc);
    assert_eq!(doc["error"]["kind"], "stranded", "{doc:#}");
    assert!(
        doc["state"]
            .as_str()
            .unwrap()
            .contains("running on the host"),
        "{doc:#}"
    );
    assert!(stderr.contains("goes on"), "{stderr}");

    // ctops is gone: apt goes on, and the lock stays held past several leases.
    std::thread::sleep(Duration::from_secs(7));
    assert!(apt_upgrade_running(), "apt was not killed");
    assert!(lock_held(), "the lock is held while apt runs");
    assert_eq!(dummy_version(), "1.0");

    // The other apt ends: ours upgrades, then the lock is released.
    locker.kill().unwrap();
    locker.wait().unwrap();
    wait_until("apt-get upgrade to end", Duration::from_secs(60), || {
        !apt_upgrade_running()
    });
    assert_eq!(dummy_version(), "2.0");
    wait_until("the lock to be released", Duration::from_secs(5), || {
        !lock_held()
    });
    reset_host();
}

#[test]
fn rebuild_whose_build_fails_after_down_exits_6_saying_the_stack_is_down() {
    let _guard = exclusive();
    reset_host();
    // A build step that fails: `down` works, then `up --build` cannot build the api.
    host(&format!(
        "printf 'RUN false\\n' >> '{CHECKOUT}/api/Dockerfile'"
    ));
    let run = sandbox_ctops(["rebuild", "--yes", "--json"])
        .run()
        .expect(6);
    let doc = run.json();
    assert_schema("error.json", &doc);
    assert_eq!(doc["error"]["kind"], "stranded", "{}", run.describe());
    let state = doc["state"].as_str().unwrap();
    assert!(state.starts_with("down"), "{}", run.describe());
    assert!(
        state.contains("services now: ") && state.contains("api absent"),
        "{}",
        run.describe()
    );
    assert!(
        !run.stderr().contains("#!/"),
        "no script body as the command"
    );
    let running = host(
        "docker ps -q --filter label=com.docker.compose.project=infrastructure --filter status=running",
    );
    assert!(
        running.trim().is_empty(),
        "the stack is down, as said: {running}"
    );
    assert!(!lock_held(), "released");
    reset_host();
    wait_healthy();
}
