//! The host lock (SPEC principle 6): one operation that changes the host at a time.
//!
//! The lock is a small `key=value` file in the target's `state_dir`, changed only under
//! `flock` so that taking it is atomic. It names its holder, carries a token that every
//! step checks before it runs (fencing), and a lease: a holder that stops renewing it (a
//! crashed laptop, a dead runner) leaves a stale lock that the next operation may take over.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::remote::{Remote, RemoteCommand};

/// How long a lease lasts without renewal. Runners and keepers renew it every
/// [`RENEW_EVERY`].
pub const LEASE: Duration = Duration::from_secs(90);
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

/// Test hook: `CTOPS_LOCK_LEASE=SECONDS` shortens the lease a keeper takes and renews (and
/// the renewal period to a third of it), so a test sees an operation outlive several leases.
const LEASE_HOOK: &str = "CTOPS_LOCK_LEASE";

/// The lease a keeper takes: [`LEASE`], or the test hook's.
pub fn lease() -> Duration {
    std::env::var(LEASE_HOOK)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(LEASE, Duration::from_secs)
}

/// How often a keeper renews: [`RENEW_EVERY`], or a third of the test hook's lease.
pub fn renew_every() -> Duration {
    match std::env::var(LEASE_HOOK)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(s) if s > 0 => Duration::from_secs((s / 3).max(1)),
        _ => RENEW_EVERY,
    }
}

/// Shell functions shared by ctops's own lock calls, the keeper and the detached runner.
/// Values arrive as positional parameters; `$D` is the state dir.
pub const LOCK_FUNCTIONS: &str = include_str!("scripts/lock-functions.sh");

/// `acquire|show|release|break`, after [`LOCK_FUNCTIONS`] (exit codes in the script).
const LOCK_SCRIPT: &str = include_str!("scripts/lock.sh");

/// Takes the lock and keeps it while ctops's channel is open or a command started under it
/// runs; after [`LOCK_FUNCTIONS`].
const LOCK_KEEPER: &str = include_str!("scripts/lock-keeper.sh");

/// Runs a command with its pid registered with the keeper.
const LOCK_RUN: &str = include_str!("scripts/lock-run.sh");

/// Starts a command detached, registered with the keeper.
const LOCK_DETACH: &str = include_str!("scripts/lock-detach.sh");

/// Streams a detached command's output until it ends; exits with its status.
const LOCK_FOLLOW: &str = include_str!("scripts/lock-follow.sh");

/// `$0` of the [`LOCK_RUN`] wrapper: `RemoteCommand::label` skips the wrapper by it, so
/// messages name the wrapped command, never the script.
pub const LOCK_RUN_NAME: &str = "ctops-lock-run";

/// Exit statuses of the lock scripts.
const HELD: i32 = 75;
const UNKNOWN_VERSION: i32 = 78;
/// The state dir is missing and cannot be created, or is not writable by this login.
pub const NOT_WRITABLE: i32 = 77;

/// The `help:` of a command that found the state dir missing or not writable.
pub fn setup_help(host: &str) -> String {
    format!(
        "run `ctops setup`: it creates the state dir on {host} shared by the operators' group (config key `group`), or prints the commands to run as root"
    )
}

/// Who holds (or held) the lock.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub pid: String,
    pub command: String,
    pub since: String,
    pub stale: bool,
    #[serde(skip)]
    pub expires: i64,
    /// The lock file's format version ("" for files that predate the line).
    #[serde(skip)]
    pub version: String,
}

impl Holder {
    /// Parses the lock file; `now` (host clock) decides staleness.
    pub fn parse(text: &str, now: Option<i64>) -> Option<Holder> {
        // The first line of a key counts, as the lock scripts read it (`lock_field`), so
        // that ctops and the host judge the same file alike; a hand-edited file with two
        // `expires=` lines must not be live for one and stale for the other.
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            fields.entry(k).or_insert(v);
        }
        let get = |k: &str| fields.get(k).map(|v| v.to_string()).unwrap_or_default();
        let expires: i64 = get("expires").parse().ok()?;
        // `now=` is the line `show` appends after the file: the last one is the host's.
        let appended_now = text.lines().rev().find_map(|l| l.strip_prefix("now="));
        let now = now.or_else(|| appended_now.and_then(|n| n.parse().ok()));
        Some(Holder {
            user: get("user"),
            host: get("host"),
            pid: get("pid"),
            command: get("command"),
            since: get("since"),
            stale: fields.contains_key("stale") || now.is_some_and(|n| expires <= n),
            expires,
            version: get("version"),
        })
    }

    /// The holder as one line of text. The file is host data: a control character in it
    /// (a terminal escape planted in `user=`) is written out, never sent to the terminal.
    pub fn describe(&self) -> String {
        let p = crate::report::printable;
        format!(
            "{}@{} (pid {}) running `{}` since {}",
            p(&self.user),
            p(&self.host),
            p(&self.pid),
            p(&self.command),
            p(&self.since)
        )
    }
}

/// A held lock. Dropping it does not release it: call [`HostLock::release`] (a runner on
/// the host may have taken over the lease).
#[derive(Debug, Clone)]
pub struct HostLock {
    pub token: String,
    pub state_dir: String,
    /// The stale lock this one replaced, if any.
    pub took_over: Option<Holder>,
}

fn lock_command(state_dir: &str, action: &str, args: &[String]) -> RemoteCommand {
    let script = format!("{LOCK_FUNCTIONS}\n{LOCK_SCRIPT}");
    let mut all = vec![state_dir.to_string(), action.to_string()];
    all.extend(args.iter().map(|a| one_line(a)));
    RemoteCommand::sh(&script, all)
}

/// A lock file field on one line: the file is `key=value` lines read by the first match, so
/// a newline in a value (a command line naming a hostile backup name) could plant a line
/// such as a fake `expires=`.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A random token that fences this operation's steps.
pub fn new_token() -> String {
    let mut bytes = [0u8; 12];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..8]
            .copy_from_slice(&(nanos.as_nanos() as u64 ^ std::process::id() as u64).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The operator as the lock, the audit log and the releases name them: the local login
/// (`user`) and this machine's name (`host`), together `user@machine`.
pub fn operator() -> (String, String) {
    let user = pick_user(
        login_name(),
        std::env::var("USER")
            .ok()
            .or_else(|| std::env::var("LOGNAME").ok()),
        git_email,
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(libc_hostname)
        .unwrap_or_else(|| "localhost".into());
    (user, host)
}

/// The first name that says who: the login from the password database, `$USER`, the git
/// identity, else the numeric uid (never "unknown": a lock must say whom to ask).
fn pick_user(
    login: Option<String>,
    env_user: Option<String>,
    git: impl FnOnce() -> Option<String>,
) -> String {
    let usable = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    usable(login)
        .or_else(|| usable(env_user))
        .or_else(|| usable(git()))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }))
}

/// The login name of this process's real uid, from the password database.
fn login_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain old data; getpwuid_r writes into `pwd` and `buf` (whose
    // length we pass) and sets `result` to null or to `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

fn libc_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

fn git_email() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["config", "user.email"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The refusal for a lock file of a format this ctops does not know (exit 4).
fn unknown_version(host: &str, file: &str) -> Error {
    let version = Holder::parse(file, None)
        .map(|h| h.version)
        .unwrap_or_default();
    Error::refused(format!(
        "the host lock on {host} is in format version {version}, which this ctops does not know: it was written by a newer ctops, and this one changes nothing there"
    ))
    .with_help("upgrade ctops to the version your colleagues use")
}

/// The refusal for a lock a live holder has (exit 4).
fn held_by(host: &str, file: &str) -> Error {
    let who = Holder::parse(file, None)
        .map(|h| h.describe())
        .unwrap_or_else(|| "another operation".into());
    Error::refused(format!("the host lock on {host} is held by {who}")).with_help(
        "wait for it to finish (`ctops lock status`); a lock whose lease lapsed can be released with `ctops lock release`",
    )
}

/// A lock script that failed for another reason: the step and its last stderr lines.
/// A state dir it cannot write is a refusal (exit 4, nothing changed) that points at
/// `ctops setup`.
fn lock_failed(remote: &Remote, step: &str, status: i32, stderr: &str) -> Error {
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let message = format!(
        "{step} on {} failed (exit {status}){}",
        remote.host(),
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" / "))
        }
    );
    if status == NOT_WRITABLE {
        return Error::refused(message).with_help(setup_help(remote.host()));
    }
    Error::failed(message)
}

impl HostLock {
    /// Takes the lock or refuses (exit 4) naming the live holder. For operations whose
    /// runner keeps the lease on the host; the others use [`hold`].
    pub async fn acquire(
        remote: &Remote,
        state_dir: &str,
        command: &str,
    ) -> Result<HostLock, Error> {
        let token = new_token();
        let (user, host) = operator();
        let args = vec![
            token.clone(),
            lease().as_secs().to_string(),
            user,
            host,
            std::process::id().to_string(),
            command.to_string(),
        ];
        let out = remote
            .run(&lock_command(state_dir, "acquire", &args))
            .await?;
        match out.status {
            0 => Ok(HostLock {
                token,
                state_dir: state_dir.to_string(),
                took_over: Holder::parse(&out.stdout_text(), Some(i64::MAX)),
            }),
            HELD => Err(held_by(remote.host(), &out.stdout_text())),
            UNKNOWN_VERSION => Err(unknown_version(remote.host(), &out.stdout_text())),
            status => Err(lock_failed(
                remote,
                "taking the host lock",
                status,
                &out.stderr_text(),
            )),
        }
    }

    pub async fn release(&self, remote: &Remote) -> Result<(), Error> {
        release_token(remote, &self.state_dir, &self.token)
            .await
            .map(|_| ())
    }
}

/// Releases lock TOKEN unless a command started under it still runs on the host (then its
/// keeper releases it when that ends): true when released (or no longer ours).
async fn release_token(remote: &Remote, state_dir: &str, token: &str) -> Result<bool, Error> {
    let out = remote
        .run(&lock_command(state_dir, "release", &[token.to_string()]))
        .await?;
    match out.status {
        0 => Ok(true),
        HELD => Ok(false),
        UNKNOWN_VERSION => Err(unknown_version(remote.host(), &out.stdout_text())),
        status => Err(lock_failed(
            remote,
            "releasing the host lock",
            status,
            &out.stderr_text(),
        )),
    }
}

/// The keeper's stdout as it arrives: ctops waits for its `kept` line.
#[derive(Clone, Default)]
struct KeeperOut {
    text: Arc<Mutex<Vec<u8>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl KeeperOut {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().expect("keeper output")).into_owned()
    }

    /// Resolves once the keeper said it holds the lock.
    async fn kept(&self) {
        while !self.text().lines().any(|l| l == "kept") {
            self.changed.notified().await;
        }
    }
}

impl tokio::io::AsyncWrite for KeeperOut {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.text
            .lock()
            .expect("keeper output")
            .extend_from_slice(buf);
        self.changed.notify_one();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A command started detached under the lock (see [`Held::detach`]).
#[derive(Debug, Clone)]
struct Detached {
    what: String,
    pid: u32,
    log: String,
}

/// The lock as an operation under [`hold_with`] sees it: it runs its host commands through
/// [`Held::run`] (or [`Held::wrap`]) so the keeper holds the lock as long as they run, and
/// the ones that must survive an interruption through [`Held::detach`].
#[derive(Debug, Clone)]
pub struct Held {
    pub token: String,
    pub state_dir: String,
    detached: Arc<Mutex<Option<Detached>>>,
}

impl Held {
    /// The command with its pid registered with the keeper: the lock stays held until it
    /// ends, also if ctops is interrupted or loses the link meanwhile.
    pub fn wrap(&self, cmd: RemoteCommand) -> RemoteCommand {
        cmd.wrapped(&[
            "sh".to_string(),
            "-c".into(),
            LOCK_RUN.into(),
            LOCK_RUN_NAME.into(),
            self.state_dir.clone(),
            self.token.clone(),
        ])
    }

    /// Starts `cmd` detached on the host (setsid, like the runner) with its pid registered
    /// with the keeper, so neither Ctrl-C nor a lost link kills it part-way, and the lock is
    /// held until it ends. `name` (a word) names its log; `what` names it in messages.
    /// Returns its pid; [`Held::follow`] streams its output and gives its exit status.
    pub async fn detach(
        &self,
        remote: &Remote,
        name: &str,
        what: &str,
        cmd: &RemoteCommand,
    ) -> Result<u32, Error> {
        let start = RemoteCommand::sh(
            LOCK_DETACH,
            [
                self.state_dir.clone(),
                self.token.clone(),
                name.to_string(),
                "sh".into(),
                "-c".into(),
                cmd.render(),
            ],
        );
        let out = remote.run(&start).await?;
        let pid = out.stdout_text().trim().parse::<u32>().ok();
        match (out.status, pid) {
            (0, Some(pid)) => {
                let log = format!("{}/lock.{}.{name}.log", self.state_dir, self.token);
                *self.detached.lock().expect("detached") = Some(Detached {
                    what: what.to_string(),
                    pid,
                    log,
                });
                Ok(pid)
            }
            (status, _) => Err(lock_failed(
                remote,
                &format!("starting `{what}` detached"),
                status,
                &out.stderr_text(),
            )),
        }
    }

    /// Streams the output of the detached command `name` (pid `pid`) to stderr until it
    /// ends (with `quiet`, only the tail of a failure's output), and returns its exit status
    /// with the last lines of its output.
    pub async fn follow(
        &self,
        remote: &Remote,
        name: &str,
        pid: u32,
        quiet: bool,
    ) -> Result<(i32, String), Error> {
        let cmd = RemoteCommand::sh(
            LOCK_FOLLOW,
            [
                self.state_dir.clone(),
                self.token.clone(),
                name.to_string(),
                pid.to_string(),
            ],
        )
        .stop_on_disconnect()
        .read_only();
        let mut seen = KeeperOut::default();
        let status = if quiet {
            remote.stream(&cmd, &mut seen, None).await?
        } else {
            let mut tee = Tee(crate::output::local_stderr(), seen.clone());
            remote.stream(&cmd, &mut tee, None).await?
        };
        *self.detached.lock().expect("detached") = None;
        let text = seen.text();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Ok((status, tail.join("\n")))
    }
}

/// Writes to stderr and keeps a copy.
struct Tee(crate::output::LocalStderr, KeeperOut);

impl tokio::io::AsyncWrite for Tee {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.0).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                let _ = Pin::new(&mut self.1).poll_write(cx, &buf[..n]);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Runs `work` holding the host lock. See [`hold_with`]; `work` runs no command the lock
/// must outlive.
pub async fn hold<T>(
    remote: &Remote,
    state_dir: &str,
    command: &str,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    hold_with(remote, state_dir, command, |_| work).await
}

/// Runs `work` holding the host lock, for operations that run from here, not as a runner on
/// the host (which keeps the lease itself).
///
/// A keeper on the host takes the lock over this connection and renews its lease while
/// ctops's channel to it is open or a command started under the lock ([`Held::wrap`],
/// [`Held::detach`]) still runs, then releases it: the lock lasts exactly as long as the
/// operation, however long that is, and outlives ctops when a command goes on after an
/// interruption or a lost link. When the work ends (done, failed, or interrupted by
/// Ctrl-C, SIGTERM or SIGHUP: the work is dropped, exit 130), ctops releases the lock unless
/// a command started under it still runs; a detached command still running at an
/// interruption goes on, and the lock with it (exit 6, naming it and its log).
pub async fn hold_with<T, F, Fut>(
    remote: &Remote,
    state_dir: &str,
    command: &str,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(Held) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let token = new_token();
    let (user, host) = operator();
    let keeper_cmd = RemoteCommand::sh(
        &format!("{LOCK_FUNCTIONS}\n{LOCK_KEEPER}"),
        [
            state_dir.to_string(),
            token.clone(),
            lease().as_secs().to_string(),
            renew_every().as_secs().to_string(),
            user,
            host,
            std::process::id().to_string(),
            command.to_string(),
        ],
    );
    let said = KeeperOut::default();
    let mut sink = said.clone();
    let keeper = remote.stream(&keeper_cmd, &mut sink, None);
    tokio::pin!(keeper);
    tokio::select! {
        ended = &mut keeper => {
            let text = said.text();
            return Err(match ended? {
                HELD => held_by(remote.host(), &text),
                UNKNOWN_VERSION => unknown_version(remote.host(), &text),
                status => lock_failed(remote, "taking the host lock", status, "see above"),
            });
        }
        _ = said.kept() => {}
    }
    let held = Held {
        token: token.clone(),
        state_dir: state_dir.to_string(),
        detached: Arc::new(Mutex::new(None)),
    };
    let detached = held.detached.clone();
    let work = work(held);
    tokio::pin!(work);
    let interrupted = crate::signals::interrupted();
    tokio::pin!(interrupted);
    let mut keeper_running = true;
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = &mut interrupted => break Err(interruption(remote, command, &detached)),
            // The keeper ends early only when the lock was broken or the link is gone: the
            // work finds out by itself.
            _ = &mut keeper, if keeper_running => keeper_running = false,
        }
    };
    let released = release_token(remote, state_dir, &token).await;
    match (result, released) {
        (Err(e), Ok(false)) if e.exit != crate::error::Exit::Stranded => Err(Error {
            message: format!(
                "{}; a command it started still runs on {}: the host lock is held until it ends",
                e.message,
                remote.host()
            ),
            ..e
        }),
        (result, _) => result,
    }
}

/// The error for an interrupted [`hold_with`]: exit 130 when what ran under the lock stops
/// with ctops's channels, exit 6 when a detached command goes on.
fn interruption(remote: &Remote, command: &str, detached: &Mutex<Option<Detached>>) -> Error {
    match detached.lock().expect("detached").clone() {
        Some(d) => Error::stranded(
            format!(
                "interrupted: `{}` goes on on {} (pid {}): it is never killed part-way; the host lock stays held until it ends",
                d.what,
                remote.host(),
                d.pid
            ),
            format!("`{}` running on the host (pid {}, output in {})", d.what, d.pid, d.log),
        )
        .with_help(format!(
            "`ctops lock status` shows the lock until it ends; then run `ctops {command}` again to see the result"
        )),
        None => Error::interrupted(format!(
            "interrupted: `{command}` stopped part-way; the host lock is released once its commands on the host have stopped"
        )),
    }
}

/// The current holder, if any (read-only).
pub async fn show(remote: &Remote, state_dir: &str) -> Result<Option<Holder>, Error> {
    let out = remote
        .run(&lock_command(state_dir, "show", &[]).read_only())
        .await?;
    if out.status != 0 {
        return Err(lock_failed(
            remote,
            "reading the host lock",
            out.status,
            &out.stderr_text(),
        ));
    }
    Ok(Holder::parse(&out.stdout_text(), None))
}

/// Removes a lock whose lease lapsed; refuses a live one, and one of an unknown version.
pub async fn break_stale(remote: &Remote, state_dir: &str) -> Result<Option<Holder>, Error> {
    let out = remote.run(&lock_command(state_dir, "break", &[])).await?;
    match out.status {
        0 => Ok(Holder::parse(&out.stdout_text(), Some(i64::MAX))),
        HELD => {
            let who = Holder::parse(&out.stdout_text(), None)
                .map(|h| h.describe())
                .unwrap_or_default();
            Err(Error::refused(format!("the lock is live: held by {who}"))
                .with_help("a live lock is released by its holder; wait, or stop that operation"))
        }
        UNKNOWN_VERSION => Err(unknown_version(remote.host(), &out.stdout_text())),
        status => Err(lock_failed(
            remote,
            "releasing the host lock",
            status,
            &out.stderr_text(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "token=ab\nuser=alice\nhost=laptop\npid=42\ncommand=deploy\nsince=2026-11-26T20:00:00Z\nexpires=1000\n";

    /// Found by `properties::a_field_twice_reads_as_the_scripts_read_it`.
    #[test]
    fn a_lock_file_with_two_expires_lines_is_judged_by_the_first_as_the_host_does() {
        let file = format!("{FILE}expires=9999999999\n");
        assert_eq!(Holder::parse(&file, Some(2000)).unwrap().expires, 1000);
        assert!(Holder::parse(&file, Some(2000)).unwrap().stale);
        // `show` appends the host's clock after the file: a planted `now=` does not count.
        let shown = format!("now=1\n{FILE}now=2000\n");
        assert!(Holder::parse(&shown, None).unwrap().stale);
    }

    /// Found by `properties::a_holder_is_described_on_one_printable_line`.
    #[test]
    fn a_terminal_escape_in_a_lock_file_is_shown_not_sent() {
        let file = FILE.replace("user=alice", "user=al\u{1b}[2Jice\u{7}");
        let described = Holder::parse(&file, Some(1)).unwrap().describe();
        assert!(
            described.starts_with("al\\u{1b}[2Jice\\u{7}@laptop"),
            "{described}"
        );
    }

    #[test]
    fn a_lock_file_names_its_holder_and_lapses() {
        let live = Holder::parse(FILE, Some(999)).unwrap();
        assert!(!live.stale);
        assert_eq!(
            live.describe(),
            "alice@laptop (pid 42) running `deploy` since 2026-11-26T20:00:00Z"
        );
        assert!(Holder::parse(FILE, Some(1000)).unwrap().stale);
        assert!(
            Holder::parse(&format!("{FILE}now=2000\n"), None)
                .unwrap()
                .stale
        );
        assert!(Holder::parse("", Some(1)).is_none());
    }

    #[test]
    fn a_value_with_a_newline_cannot_plant_a_line_in_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let args: Vec<String> = [
            "t1",
            "60",
            "alice",
            "a",
            "1",
            "restore db x\nexpires=99999999999",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(lock_command(&d, "acquire", &args).render())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let file = std::fs::read_to_string(dir.path().join("lock")).unwrap();
        assert_eq!(
            file.lines().filter(|l| l.starts_with("expires=")).count(),
            1,
            "{file}"
        );
        assert!(
            file.contains("command=restore db x expires=99999999999\n"),
            "{file}"
        );
    }

    #[test]
    fn the_lock_script_takes_refuses_and_releases_for_real() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let run = |action: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let cmd = lock_command(&d, action, &args);
            std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd.render())
                .output()
                .unwrap()
        };
        assert_eq!(
            run("acquire", &["t1", "60", "alice", "a", "1", "deploy"])
                .status
                .code(),
            Some(0)
        );
        let refused = run("acquire", &["t2", "60", "bob", "b", "2", "rollback"]);
        assert_eq!(refused.status.code(), Some(75));
        assert!(String::from_utf8_lossy(&refused.stdout).contains("user=alice"));
        assert_eq!(run("release", &["t2"]).status.code(), Some(0));
        assert!(dir.path().join("lock").exists(), "only the holder releases");
        assert_eq!(run("release", &["t1"]).status.code(), Some(0));
        assert!(!dir.path().join("lock").exists());
        // A lapsed lease is taken over, and the old holder is reported.
        assert_eq!(
            run("acquire", &["t3", "0", "carol", "c", "3", "deploy"])
                .status
                .code(),
            Some(0)
        );
        let over = run("acquire", &["t4", "60", "dave", "d", "4", "deploy"]);
        assert_eq!(over.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&over.stdout).contains("stale=1"));
        let file = std::fs::read_to_string(dir.path().join("lock")).unwrap();
        assert!(file.starts_with("version=1\n"), "{file}");
    }

    #[test]
    fn a_lock_file_of_an_unknown_version_is_never_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let run = |action: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            std::process::Command::new("sh")
                .arg("-c")
                .arg(lock_command(&d, action, &args).render())
                .output()
                .unwrap()
        };
        // Written by a newer ctops, lapsed long ago, even with our token: left alone.
        let newer =
            "version=2\ntoken=t1\nuser=zoe\nhost=z\npid=9\ncommand=deploy\nsince=x\nexpires=1\n";
        std::fs::write(dir.path().join("lock"), newer).unwrap();
        for (action, args) in [
            ("acquire", &["t2", "60", "bob", "b", "2", "restart"][..]),
            ("release", &["t1"][..]),
            ("break", &[][..]),
        ] {
            let out = run(action, args);
            assert_eq!(out.status.code(), Some(UNKNOWN_VERSION), "{action}");
        }
        let renew = format!(
            "D={}\n{LOCK_FUNCTIONS}\nlock_renew t1 60",
            crate::remote::quote(&d)
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(renew)
            .output()
            .unwrap();
        assert!(!out.status.success(), "renew refuses it too");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lock")).unwrap(),
            newer
        );
        // A file from before the version line is version 1.
        let older = newer.replace("version=2\n", "");
        std::fs::write(dir.path().join("lock"), &older).unwrap();
        assert_eq!(run("break", &[]).status.code(), Some(0));
        let refusal = unknown_version("trader-psy", newer);
        assert_eq!(refusal.exit, crate::error::Exit::Refused);
        assert!(refusal.message.contains("version 2"), "{}", refusal.message);
        assert!(refusal.help.unwrap().contains("upgrade ctops"));
    }

    #[test]
    fn the_operator_is_always_someone() {
        let (user, host) = operator();
        assert!(!user.is_empty() && user != "unknown", "{user}");
        assert!(!host.is_empty() && host != "unknown", "{host}");
        // The password database first, then $USER, then git's identity, then the uid.
        let git = || Some("ann@example.org".to_string());
        assert_eq!(pick_user(Some("ann".into()), Some("x".into()), git), "ann");
        assert_eq!(pick_user(None, Some("bob".into()), git), "bob");
        assert_eq!(pick_user(None, Some(" ".into()), git), "ann@example.org");
        assert!(pick_user(None, None, || None).starts_with("uid"));
        // In this test process the login is the real one, never a placeholder.
        let login = login_name().expect("the test runs as a user in the password database");
        assert_eq!(user, login);
    }

    /// Runs the keeper as sshd would, its stdin the channel; returns it once it holds the lock.
    fn start_keeper(d: &str, token: &str, lease: &str) -> std::process::Child {
        use std::io::BufRead;
        let cmd = RemoteCommand::sh(
            &format!("{LOCK_FUNCTIONS}\n{LOCK_KEEPER}"),
            [d, token, lease, "1", "alice", "laptop", "42", "prune"],
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd.render())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "kept");
        child
    }

    fn expires(dir: &std::path::Path) -> Option<i64> {
        let text = std::fs::read_to_string(dir.join("lock")).ok()?;
        Holder::parse(&text, None).map(|h| h.expires)
    }

    #[test]
    fn the_keeper_renews_while_the_channel_is_open_or_a_command_runs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mut keeper = start_keeper(d, "k1", "2");
        let first = expires(dir.path()).unwrap();
        // Renewed every second: well within three seconds, even on a loaded machine.
        let started = std::time::Instant::now();
        while expires(dir.path()).unwrap() <= first {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "renewed past its first lease"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // A command registered under the lock outlives the channel: the lock with it.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("3")
            .spawn()
            .unwrap();
        std::fs::write(
            dir.path().join("lock.k1.pids"),
            format!("{}\n", sleeper.id()),
        )
        .unwrap();
        drop(keeper.stdin.take());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            dir.path().join("lock").exists(),
            "held while the command runs"
        );
        sleeper.wait().unwrap();
        let started = std::time::Instant::now();
        while dir.path().join("lock").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "released after it ended"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(keeper.wait().unwrap().success());
        assert!(!dir.path().join("lock.k1.pids").exists());
    }

    #[test]
    fn a_released_lock_stops_its_keeper_and_a_busy_one_is_not_released() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let mut keeper = start_keeper(&d, "k2", "60");
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(
            dir.path().join("lock.k2.pids"),
            format!("{}\n", sleeper.id()),
        )
        .unwrap();
        let release = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(lock_command(&d, "release", &["k2".to_string()]).render())
                .output()
                .unwrap()
        };
        assert_eq!(release().status.code(), Some(HELD), "a command still runs");
        assert!(dir.path().join("lock").exists());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert_eq!(release().status.code(), Some(0));
        assert!(!dir.path().join("lock").exists());
        // The keeper sees the lock is no longer its own and ends (its channel still open).
        let started = std::time::Instant::now();
        while keeper.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the keeper ended"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn the_lock_run_wrapper_is_not_what_messages_name() {
        let held = Held {
            token: "t".into(),
            state_dir: "/srv/state".into(),
            detached: Arc::new(Mutex::new(None)),
        };
        let cmd = held.wrap(RemoteCommand::new(["docker", "compose", "restart"]));
        assert_eq!(cmd.label(), "docker compose restart");
        assert!(cmd.render().contains(LOCK_RUN_NAME));
    }
}

/// Property tests of the lock file parser against the format `lock_write` writes.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 8] = [
        "version", "token", "user", "host", "pid", "command", "since", "expires",
    ];

    proptest! {
        /// What ctops writes (each value through `one_line`) reads back field for field.
        #[test]
        fn a_written_lock_file_reads_back(values in proptest::collection::vec(any::<String>(), 6), expires in any::<i64>()) {
            let v: Vec<String> = values.iter().map(|s| one_line(s)).collect();
            let text = format!(
                "version=1\ntoken={}\nuser={}\nhost={}\npid={}\ncommand={}\nsince={}\nexpires={expires}\n",
                v[0], v[1], v[2], v[3], v[4], v[5]
            );
            let h = Holder::parse(&text, Some(0)).unwrap();
            prop_assert_eq!(
                (&h.user, &h.host, &h.pid, &h.command, &h.since, h.expires),
                (&v[1], &v[2], &v[3], &v[4], &v[5], expires)
            );
            prop_assert_eq!(h.stale, expires <= 0);
        }

        /// Host data in any shape: no panic, and the first line of a key counts (`lock_field`
        /// reads `sed -n s/^KEY=//p | head -n 1`).
        #[test]
        fn a_field_twice_reads_as_the_scripts_read_it(
            lines in proptest::collection::vec((proptest::sample::select(KEYS.to_vec()), "[0-9]{1,6}|[ -~]{0,12}"), 0..12)
        ) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let first = |key: &str| lines.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
            match Holder::parse(&text, Some(0)) {
                Some(h) => {
                    prop_assert_eq!(Some(h.expires.to_string()), first("expires").map(|e| e.parse::<i64>().unwrap().to_string()));
                    prop_assert_eq!(Some(h.user), first("user").or(Some(String::new())));
                }
                None => prop_assert!(first("expires").is_none_or(|e| e.parse::<i64>().is_err())),
            }
        }

        #[test]
        fn a_holder_is_described_on_one_printable_line(
            text in prop_oneof![
                any::<String>(),
                proptest::collection::vec((proptest::sample::select(KEYS.to_vec()), "[\\x00-\\x7f]{0,10}"), 0..10)
                    .prop_map(|l| l.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>()),
            ],
            now in any::<Option<i64>>()
        ) {
            if let Some(h) = Holder::parse(&text, now) {
                let d = h.describe();
                prop_assert!(!d.chars().any(char::is_control), "{d:?}");
            }
        }
    }
}
