//! The host lock (SPEC principle 6): one operation that changes the host at a time.
//!
//! The lock is a small `key=value` file in the target's `state_dir`, changed only under
//! `flock` so that taking it is atomic. It names its holder, carries a token that every
//! step checks before it runs (fencing), and a lease: a holder that stops renewing it (a
//! crashed laptop, a dead runner) leaves a stale lock that the next operation may take over.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::remote::{Remote, RemoteCommand};

/// How long a lease lasts without renewal. Runners renew it every [`RENEW_EVERY`].
pub const LEASE: Duration = Duration::from_secs(90);
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

/// Shell functions shared by ctops's own lock calls and the detached runner. Values arrive
/// as positional parameters; `$D` is the state dir.
pub const LOCK_FUNCTIONS: &str = r#"
lock_file() { printf '%s/lock' "$D"; }
lock_now() { date -u +%s; }
lock_field() { sed -n "s/^$1=//p" "$(lock_file)" 2>/dev/null | head -n 1; }
lock_live() { [ -f "$(lock_file)" ] && [ "$(lock_field expires)" -gt "$(lock_now)" ] 2>/dev/null; }
lock_mine() { [ -f "$(lock_file)" ] && [ "$(lock_field token)" = "$1" ]; }
lock_write() { # token lease user host pid command
    t=$(lock_file).tmp.$$
    { printf 'token=%s\nuser=%s\nhost=%s\npid=%s\ncommand=%s\n' "$1" "$3" "$4" "$5" "$6"
      printf 'since=%s\nexpires=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(( $(lock_now) + $2 ))"; } > "$t" &&
    chmod 0664 "$t" && mv -f "$t" "$(lock_file)"
}
lock_renew() { # token lease
    ( flock -w 10 9 || exit 1
      lock_mine "$1" || exit 1
      t=$(lock_file).tmp.$$
      sed "s/^expires=.*/expires=$(( $(lock_now) + $2 ))/" "$(lock_file)" > "$t" && mv -f "$t" "$(lock_file)"
    ) 9>>"$D/.mutex"
}
lock_release() { # token
    ( flock -w 10 9 || exit 1; if lock_mine "$1"; then rm -f "$(lock_file)"; fi ) 9>>"$D/.mutex"
}
"#;

/// `acquire|show|release|break TOKEN LEASE USER HOST PID COMMAND`: exit 75 when another
/// live holder has the lock (its file on stdout), 0 otherwise (the previous holder's file
/// on stdout when a stale lock was taken over).
const LOCK_SCRIPT: &str = r#"D=$1; action=$2; shift 2
mkdir -p "$D" 2>/dev/null; chmod g+w "$D" 2>/dev/null || true
if [ ! -w "$D" ]; then echo "state dir $D is not writable by $(id -un)" >&2; exit 77; fi
exec 9>>"$D/.mutex"
flock -w 10 9 || { echo "timed out waiting for $D/.mutex" >&2; exit 76; }
case $action in
acquire)
    if lock_live && ! lock_mine "$1"; then cat "$(lock_file)"; exit 75; fi
    [ -f "$(lock_file)" ] && { cat "$(lock_file)"; echo "stale=1"; }
    lock_write "$@" ;;
show)
    [ -f "$(lock_file)" ] && { cat "$(lock_file)"; echo "now=$(lock_now)"; } || true ;;
release)
    if lock_mine "$1"; then rm -f "$(lock_file)"; fi ;;
break)
    if lock_live; then cat "$(lock_file)"; exit 75; fi
    [ -f "$(lock_file)" ] && cat "$(lock_file)"; rm -f "$(lock_file)" ;;
esac"#;

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
}

impl Holder {
    /// Parses the lock file; `now` (host clock) decides staleness.
    pub fn parse(text: &str, now: Option<i64>) -> Option<Holder> {
        let fields: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| fields.get(k).map(|v| v.to_string()).unwrap_or_default();
        let expires: i64 = get("expires").parse().ok()?;
        let now = now.or_else(|| get("now").parse().ok());
        Some(Holder {
            user: get("user"),
            host: get("host"),
            pid: get("pid"),
            command: get("command"),
            since: get("since"),
            stale: fields.contains_key("stale") || now.is_some_and(|n| expires <= n),
            expires,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{}@{} (pid {}) running `{}` since {}",
            self.user, self.host, self.pid, self.command, self.since
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
    all.extend(args.iter().cloned());
    RemoteCommand::sh(&script, all)
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

/// The operator as the lock and the audit log name them.
pub fn operator() -> (String, String) {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    (user, host)
}

impl HostLock {
    /// Takes the lock or refuses (exit 4) naming the live holder.
    pub async fn acquire(
        remote: &Remote,
        state_dir: &str,
        command: &str,
    ) -> Result<HostLock, Error> {
        let token = new_token();
        let (user, host) = operator();
        let args = vec![
            token.clone(),
            LEASE.as_secs().to_string(),
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
            75 => {
                let holder = Holder::parse(&out.stdout_text(), None);
                let who = holder
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "another operation".into());
                Err(Error::refused(format!("the host lock on {} is held by {who}", remote.host()))
                    .with_help("wait for it to finish (`ctops lock status`); a lock whose lease lapsed can be released with `ctops lock release`"))
            }
            _ => Err(remote.exited(
                &lock_command(state_dir, "acquire", &args),
                out.status,
                &out.stderr,
            )),
        }
    }

    pub async fn release(&self, remote: &Remote) -> Result<(), Error> {
        remote
            .run_ok(&lock_command(
                &self.state_dir,
                "release",
                std::slice::from_ref(&self.token),
            ))
            .await?;
        Ok(())
    }
}

/// Runs `work` holding the host lock and releases the lock however the work ends: done,
/// failed, or interrupted (Ctrl-C, SIGTERM, SIGHUP: the work is dropped, exit 130). For
/// operations that run from here, not as a runner on the host (which keeps the lease itself).
pub async fn hold<T>(
    remote: &Remote,
    state_dir: &str,
    command: &str,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let lock = HostLock::acquire(remote, state_dir, command).await?;
    let result = tokio::select! {
        result = work => result,
        _ = crate::signals::interrupted() => Err(Error::interrupted(format!(
            "interrupted: `{command}` stopped part-way; the host lock is released"
        ))),
    };
    let _ = lock.release(remote).await;
    result
}

/// The current holder, if any (read-only).
pub async fn show(remote: &Remote, state_dir: &str) -> Result<Option<Holder>, Error> {
    let out = remote
        .run_ok(&lock_command(state_dir, "show", &[]).read_only())
        .await?;
    Ok(Holder::parse(&out.stdout_text(), None))
}

/// Removes a lock whose lease lapsed; refuses a live one.
pub async fn break_stale(remote: &Remote, state_dir: &str) -> Result<Option<Holder>, Error> {
    let out = remote.run(&lock_command(state_dir, "break", &[])).await?;
    match out.status {
        0 => Ok(Holder::parse(&out.stdout_text(), Some(i64::MAX))),
        75 => {
            let who = Holder::parse(&out.stdout_text(), None)
                .map(|h| h.describe())
                .unwrap_or_default();
            Err(Error::refused(format!("the lock is live: held by {who}"))
                .with_help("a live lock is released by its holder; wait, or stop that operation"))
        }
        status => Err(Error::failed(format!(
            "releasing the lock failed (exit {status}): {}",
            out.stderr_text().trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "token=ab\nuser=alice\nhost=laptop\npid=42\ncommand=deploy\nsince=2026-11-26T20:00:00Z\nexpires=1000\n";

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
    }
}
