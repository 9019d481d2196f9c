//! The copies kept on this machine (`local_dir`): database dumps and object-store bodies are
//! users' data, so folders are 0700 and files 0600 whatever the umask, and every file
//! appears under its name only once complete (temporary name, flush, rename). A lock on
//! `local_dir` keeps `backup minio`, `restore minio` and `backup prune` from running at once:
//! prune removes bodies no snapshot lists, which a running backup has fetched but not yet
//! listed.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

/// How long a command waits for the local lock before it refuses.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_FILE: &str = ".ctops.lock";
/// The most of the lock file's holder line that a message quotes.
const HOLDER_CHARS: usize = 200;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::failed(format!("cannot {what} {}: {e}", path.display())).with_help(
        "check that this account owns the folder (local_dir in the configuration for backups)",
    )
}

/// Creates `dir` (and missing parents) as 0700, and takes group and other access away from
/// it when an earlier version left it open: whatever it holds is then private too.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("create", dir, e))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| io_error("read", dir, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        // A folder this account does not own (a shared mount) stays as it is: the files ctops
        // writes in it are 0600 all the same.
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!("{} stays mode {:o}: {e}", dir.display(), mode & 0o777);
        }
    }
    Ok(())
}

/// A new private file for writing (0600 whatever the umask; an existing file of the same
/// name, left by a process whose pid was reused, is truncated and made private too).
pub fn create_private(path: &Path) -> Result<std::fs::File, Error> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error("create", path, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_error("restrict", path, e))?;
    Ok(file)
}

/// The temporary name of `path` for this process: `.tmp-PID-NAME` next to it.
pub fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

/// Writes `bytes` to `path` as 0600, atomically: a temporary name, flushed, renamed, and the
/// folder flushed, so a crash leaves the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temporary(path);
    let written = create_private(&tmp).and_then(|mut f| {
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_error("write", &tmp, e))
    });
    let renamed = written.and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|e| io_error("rename into place", path, e))
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Flushes a folder's entries (a rename is durable once its folder is).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Whether process `pid` exists on this machine, whoever runs it (`kill(pid, 0)` fails with
/// EPERM for another user's process, which is alive all the same).
pub fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).is_dir()
}

/// The pid in a temporary name `.tmp-PID-...`.
pub fn temporary_owner(name: &str) -> Option<u32> {
    name.strip_prefix(".tmp-")?.split('-').next()?.parse().ok()
}

/// Removes temporary files in `dir` whose writer is gone (or whose name says no pid).
pub fn sweep_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(".tmp-") {
            continue;
        }
        if temporary_owner(&name).is_some_and(alive) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// The exclusive lock on `local_dir`, released when dropped (or when the process dies: the
/// kernel drops an flock with its last descriptor).
#[derive(Debug)]
pub struct LocalLock {
    _file: std::fs::File,
}

/// Takes the lock on `local_dir` for `command`, waiting up to `wait` for whoever holds it;
/// then refuses (exit 4) naming the holder.
pub async fn lock(local_dir: &Path, command: &str, wait: Duration) -> Result<LocalLock, Error> {
    private_dir(local_dir)?;
    let path = local_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if got {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_error("lock", &path, err));
        }
        let holder = holder(&path);
        if started.elapsed() >= wait {
            return Err(Error::refused(format!(
                "{} is in use by {holder}; {command} did nothing",
                local_dir.display()
            ))
            .with_help(format!(
                "run {command} again when that has finished (the lock is {})",
                path.display()
            )));
        }
        if !said {
            tracing::info!(
                "waiting for {holder} to finish with {}",
                local_dir.display()
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let line = format!("{command} (pid {}, since {since})\n", std::process::id());
    // Who holds it, for the message of whoever waits; the lock itself does not depend on it.
    let _ = file
        .set_len(0)
        .and_then(|()| std::io::Seek::rewind(&mut file))
        .and_then(|()| file.write_all(line.as_bytes()));
    Ok(LocalLock { _file: file })
}

/// The lock file's holder line, bounded (it is only ever quoted in a message).
fn holder(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(HOLDER_CHARS)
        .collect();
    if line.is_empty() {
        "another ctops".into()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_folders_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::set_permissions(dir.path().join("a"), PermissionsExt::from_mode(0o755)).unwrap();
        private_dir(&dir.path().join("a")).unwrap();
        private_dir(&nested).unwrap();
        let file = nested.join("f");
        write_atomic(&file, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        let names: Vec<_> = std::fs::read_dir(&nested).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary left");
    }

    #[test]
    fn temporaries_of_live_processes_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join(format!(".tmp-{}-x", std::process::id()));
        let gone = dir.path().join(".tmp-999999999-x");
        let nameless = dir.path().join(".tmp-x");
        for p in [&mine, &gone, &nameless] {
            std::fs::write(p, "").unwrap();
        }
        sweep_temporaries(dir.path());
        assert!(mine.exists());
        assert!(!gone.exists() && !nameless.exists());
    }

    #[tokio::test]
    async fn a_second_holder_waits_then_is_refused_with_the_holders_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path(), "backup minio", LOCK_WAIT).await.unwrap();
        // flock conflicts between descriptors, even in one process.
        let second = lock(dir.path(), "backup prune", Duration::from_millis(300)).await;
        let message = second.unwrap_err().message;
        assert!(message.contains("backup minio (pid"), "{message}");
        drop(first);
        lock(dir.path(), "backup prune", Duration::ZERO)
            .await
            .unwrap();
    }
}
