//! The test harness: runs the built binary with a scrubbed environment against the sandbox,
//! prints status, stdout and stderr together on failure, and serialises tests that change
//! the sandbox.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

static SANDBOX_LOCK: RwLock<()> = RwLock::new(());

/// Tests that only read the sandbox run together.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    SANDBOX_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Tests that change the sandbox (stop a service, count connections) run alone.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SANDBOX_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// The sandbox's state folder; the tests fail (never skip) when it is not provisioned.
pub fn sandbox() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("CTOPS_SANDBOX").unwrap_or_else(|_| "/var/tmp/ctops-sandbox".into()),
    );
    assert!(
        dir.join("ctops.toml").is_file(),
        "no sandbox at {}: run `tests/sandbox/sandbox.sh up` (tests/run.sh does)",
        dir.display()
    );
    dir
}

pub fn sandbox_config() -> PathBuf {
    sandbox().join("ctops.toml")
}

/// The checkout on the sandbox host.
pub const CHECKOUT: &str = "/srv/ctops sandbox/trader-psy";

/// A `ctops` invocation with a clean environment: no user config, no ~/.ssh/config.
pub struct Ctops {
    cmd: Command,
    home: tempfile::TempDir,
}

pub fn ctops<I, S>(args: I) -> Ctops
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctops"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .current_dir(home.path())
        .args(args)
        .stdin(Stdio::null());
    Ctops { cmd, home }
}

/// `ctops --config <sandbox config> ARGS...`
pub fn sandbox_ctops<I, S>(args: I) -> Ctops
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = ctops(args);
    c.cmd.env("CTOPS_CONFIG", sandbox_config());
    c
}

impl Ctops {
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn run(mut self) -> Run {
        let started = Instant::now();
        let output = self.cmd.output().expect("run ctops");
        Run {
            output,
            elapsed: started.elapsed(),
            args: format!("{:?}", self.cmd),
        }
    }

    pub fn spawn(mut self) -> (std::process::Child, tempfile::TempDir) {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        (self.cmd.spawn().expect("spawn ctops"), self.home)
    }
}

pub struct Run {
    pub output: Output,
    pub elapsed: Duration,
    args: String,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the exit code, showing everything when it differs.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code(), code, "{}", self.describe());
        self
    }

    pub fn describe(&self) -> String {
        format!(
            "{}\nexit: {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.output.status,
            self.elapsed,
            self.stdout(),
            self.stderr()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout().trim())
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", self.describe()))
    }
}

/// Validates a document against a schema kept in `src/schemas/`.
pub fn assert_schema(name: &str, doc: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/schemas")
        .join(name);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{doc:#}");
    // Every document also fits the common envelope.
    if name != "envelope.json" {
        assert_schema("envelope.json", doc);
    }
}

/// Runs a shell command on the sandbox host (this machine), returning stdout; panics on failure.
pub fn host(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "host command failed: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`host`], but returns success instead of panicking.
pub fn host_ok(script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The id of the running container of a sandbox service.
pub fn container(service: &str) -> String {
    let id = host(&format!(
        "docker ps -aq --filter label=com.docker.compose.service={service} \
         --filter 'label=com.docker.compose.project.working_dir={CHECKOUT}/infrastructure'"
    ));
    let id = id
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no container for {service}"))
        .to_string();
    id
}

/// Waits until `probe` holds, or panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) {
    let started = Instant::now();
    while !probe() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every sandbox service is back up and healthy (after a test stopped one).
pub fn wait_healthy() {
    wait_until("the sandbox to be healthy", Duration::from_secs(60), || {
        sandbox_ctops(["health"]).run().code() == 0
    });
}

/// Starts a stopped/paused service again when the test ends, even if it panicked.
pub struct Restore(pub Vec<String>);

impl Drop for Restore {
    fn drop(&mut self) {
        for script in &self.0 {
            let _ = Command::new("sh").arg("-c").arg(script).status();
        }
        wait_healthy();
    }
}

/// How many SSH connections the sandbox sshd has accepted so far.
pub fn ssh_connections() -> usize {
    let log = std::fs::read_to_string(sandbox().join("sshd/sshd.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("Connection from"))
        .count()
}

/// Processes whose command line contains `needle` (excluding the pgrep itself).
pub fn processes_matching(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .arg("-af")
        .arg("--")
        .arg(needle)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_string)
        .collect()
}

/// Writes a config next to the sandbox's, with `edit` applied to the sandbox config's text.
pub fn variant_config(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(sandbox_config()).unwrap();
    let ssh_config = sandbox().join("ssh_config");
    let text = text.replace(
        "ssh_config = \"ssh_config\"",
        &format!("ssh_config = {:?}", ssh_config.display().to_string()),
    );
    let path = dir.join("ctops.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// A temporary directory only we can enter (for `CTOPS_CONTROL_DIR`).
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Puts the sandbox host back to its initial state: v1.26.0, schema 0002, no history, no
/// lock, no backups.
pub fn reset_host() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sandbox/sandbox.sh");
    let out = Command::new(script).arg("reset-host").output().unwrap();
    assert!(
        out.status.success(),
        "reset-host: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Holds dpkg's frontend lock (an fcntl lock, as apt takes it) for `seconds`, like another
/// apt or unattended-upgrades would; returns once the lock is held.
pub fn hold_dpkg_lock(seconds: u32) -> std::process::Child {
    use std::io::BufRead;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import fcntl, os, sys, time\n\
             f = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR | os.O_CREAT)\n\
             fcntl.lockf(f, fcntl.LOCK_EX)\n\
             print('held', flush=True)\n\
             time.sleep({seconds})\n"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    child
}

/// The commit the sandbox's checkout has checked out.
pub fn head_commit() -> String {
    host(&format!(
        "git -c safe.directory='*' -C '{CHECKOUT}' rev-parse HEAD"
    ))
    .trim()
    .to_string()
}

/// Whether the sandbox's host lock is held (its `lock status --json` validated).
pub fn lock_held() -> bool {
    let doc = sandbox_ctops(["lock", "status", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("lock-status.json", &doc);
    doc["held"] == true
}
