//! Opening the one SSH connection: a private control directory, stale masters swept, errors
//! classified into what the operator can act on.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder};

use crate::config::Target;
use crate::error::Error;

/// How often ssh checks that the link is alive; three missed answers end the connection.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The folder that holds one subfolder per running ctops (named by its pid), each with the
/// control socket of that invocation's master. Short, private and ours.
pub fn control_root() -> Result<PathBuf, Error> {
    let uid = unsafe { libc::getuid() };
    let root = std::env::var_os("CTOPS_CONTROL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/ctops-{uid}")));
    let mkdir = std::fs::DirBuilder::new().mode(0o700).create(&root);
    if let Err(e) = mkdir {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(Error::failed(format!(
                "cannot create control directory `{}`: {e}",
                root.display()
            )));
        }
    }
    let meta = std::fs::symlink_metadata(&root)
        .map_err(|e| Error::failed(format!("cannot inspect `{}`: {e}", root.display())))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::refused(format!(
            "control directory `{}` is not a private directory owned by uid {uid}",
            root.display()
        ))
        .with_help("remove it, or set CTOPS_CONTROL_DIR to a private directory"));
    }
    Ok(root)
}

/// Ends the masters of ctops processes that died without closing them (SIGKILL, a crash).
pub async fn sweep_stale_masters(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || is_running_ctops(pid) {
            continue;
        }
        for socket in control_sockets(&entry.path()) {
            tracing::debug!("closing stale ssh master {}", socket.display());
            let stale = Session::resume_mux(socket.into_boxed_path(), None);
            let _ = tokio::time::timeout(Duration::from_secs(2), stale.close()).await;
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

fn is_running_ctops(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "ctops")
}

fn control_sockets(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path().join("master"))
        .filter(|p| p.exists())
        .collect()
}

/// Connects to the target's host with strict host key checking and keepalives.
pub async fn open(target: &Target, root: &Path) -> Result<Session, Error> {
    let dir = root.join(std::process::id().to_string());
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .map_err(|e| Error::failed(format!("cannot create `{}`: {e}", dir.display())))?;

    let connect_timeout = target.timeouts.connect();
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(KnownHosts::Strict)
        .control_directory(&dir)
        .connect_timeout(connect_timeout.max(Duration::from_secs(1)))
        .server_alive_interval(KEEPALIVE);
    if let Some(config) = &target.ssh_config {
        builder.config_file(config);
    }
    // ssh enforces ConnectTimeout itself; this outer bound covers anything it does not.
    let outer = connect_timeout + Duration::from_secs(5);
    match tokio::time::timeout(outer, builder.connect_mux(&target.ssh)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(classify(&target.ssh, &error_text(&e), connect_timeout)),
        Err(_) => Err(classify(&target.ssh, "timed out", connect_timeout)),
    }
}

/// Proves that a *new* connection logs in (not the multiplexed one, which stays up whatever
/// happens to `authorized_keys`): a separate `ssh` with the same config, no control master.
pub async fn probe_new_login(target: &Target) -> Result<(), Error> {
    let connect_timeout = target.timeouts.connect().max(Duration::from_secs(1));
    let mut ssh = tokio::process::Command::new("ssh");
    if let Some(config) = &target.ssh_config {
        ssh.arg("-F").arg(config);
    }
    ssh.args([
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
    ])
    .arg("-o")
    .arg(format!("ConnectTimeout={}", connect_timeout.as_secs()))
    .arg("--")
    .arg(&target.ssh)
    .arg("true")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let outer = connect_timeout + Duration::from_secs(5);
    match tokio::time::timeout(outer, ssh.output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(classify(
            &target.ssh,
            String::from_utf8_lossy(&out.stderr).trim(),
            connect_timeout,
        )),
        Ok(Err(e)) => Err(Error::failed(format!("cannot run ssh: {e}"))),
        Err(_) => Err(classify(&target.ssh, "timed out", connect_timeout)),
    }
}

fn error_text(e: &openssh::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Turns what ssh said into an error with exit code 3 and a `help:` line.
pub fn classify(host: &str, ssh_said: &str, connect_timeout: Duration) -> Error {
    let said = ssh_said.trim();
    let last_line = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(said)
        .trim();
    let (what, help) = if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || said.contains("has changed and you have requested strict checking")
    {
        (
            "host key mismatch: the host key differs from the one in known_hosts".to_string(),
            "this may be an attack or a reinstalled host; verify the new key out of band, then update known_hosts (ssh-keygen -R HOST)".to_string(),
        )
    } else if said.contains("Host key verification failed") || said.contains("host key is known") {
        (
            "unknown host key: the host is not in known_hosts (strict checking is on)".to_string(),
            "verify the host's key fingerprint out of band and add it to known_hosts (ssh-keyscan) before connecting".to_string(),
        )
    } else if said.contains("Permission denied")
        || said.contains("Too many authentication failures")
    {
        (
            format!("authentication refused: {last_line}"),
            "ctops runs ssh with BatchMode=yes: only keys from ssh-agent or unencrypted key files work; check `ssh HOST` works without a prompt".to_string(),
        )
    } else if said.contains("timed out") || said.contains("Timeout") {
        (
            format!(
                "connect timeout after {}s (timeouts.connect): {last_line}",
                connect_timeout.as_secs()
            ),
            "the host did not answer in time; check the network, or raise timeouts.connect"
                .to_string(),
        )
    } else {
        (
            format!("host unreachable: {last_line}"),
            "check the `ssh` value, the ssh_config and that sshd runs on the host (try `ssh HOST true`)".to_string(),
        )
    };
    Error::connection(format!("cannot connect to {host}: {what}")).with_help(help)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    fn kind(said: &str) -> String {
        let e = classify("h", said, Duration::from_secs(5));
        assert_eq!(e.exit, Exit::Connection);
        e.message
    }

    #[test]
    fn ssh_messages_are_classified() {
        assert!(kind("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.").contains("mismatch"));
        assert!(kind("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.").contains("unknown host key"));
        assert!(kind("deploy@127.0.0.1: Permission denied (publickey).")
            .contains("authentication refused"));
        assert!(kind("Connection timed out during banner exchange").contains("connect timeout"));
        assert!(
            kind("ssh: connect to host 127.0.0.1 port 1: Connection refused")
                .contains("unreachable")
        );
    }

    #[test]
    fn auth_help_mentions_batch_mode() {
        let e = classify("h", "Permission denied (publickey)", Duration::from_secs(5));
        assert!(e.help.unwrap().contains("BatchMode"));
    }
}
