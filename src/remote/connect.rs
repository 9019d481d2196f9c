//! Opening the one SSH connection: a private control directory, stale masters swept, errors
//! classified into what the operator can act on.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ffi::OsString;
use std::process::Stdio;

use openssh::Session;

use super::dial;

use crate::config::Target;
use crate::error::Error;
use crate::output::Output;

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

/// `DIR/master`, and `DIR/*/master` where ctops 0.5 and earlier kept it.
fn control_sockets(dir: &Path) -> Vec<PathBuf> {
    let nested = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("master"));
    std::iter::once(dir.join("master"))
        .chain(nested)
        .filter(|p| p.exists())
        .collect()
}

/// Connects to the target's host with strict host key checking and keepalives: an `ssh`
/// master (as the openssh crate starts it, plus the dialer below) that ctops then talks to
/// over its control socket. Returns the session and the folder that holds the socket.
pub async fn open(target: &Target, root: &Path, out: &Output) -> Result<(Session, PathBuf), Error> {
    let dir = root.join(std::process::id().to_string());
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .map_err(|e| Error::failed(format!("cannot create `{}`: {e}", dir.display())))?;
    let socket = dir.join("master");
    let log = dir.join("log");
    // Left by an earlier process with this pid: ssh would refuse the socket and append to
    // the log.
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&log);

    let connect_timeout = target.timeouts.connect().max(Duration::from_secs(1));
    let dialer = dialer(target, connect_timeout).await;
    let args = master_args(target, &socket, &log, connect_timeout, dialer.as_deref());
    let shown: Vec<String> = args
        .iter()
        .map(|a| super::quote(&a.to_string_lossy()).into_owned())
        .collect();
    out.echo_local(&format!(
        "ssh {} (one multiplexed connection)",
        shown.join(" ")
    ));

    let mut ssh = tokio::process::Command::new("ssh");
    ssh.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if dialer.is_some() {
        ssh.env(dial::LOG_VAR, &log);
    }

    // ssh enforces ConnectTimeout itself; this outer bound covers anything it does not.
    let outer = connect_timeout + Duration::from_secs(5);
    // With -f, ssh exits (leaving the master in the background) once it is logged in.
    match tokio::time::timeout(outer, ssh.status()).await {
        Ok(Ok(status)) if status.success() => {
            let session = Session::resume_mux(socket.into_boxed_path(), Some(log.into()));
            Ok((session, dir))
        }
        Ok(Ok(_)) => {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            Err(classify(&target.ssh, &said, connect_timeout))
        }
        Ok(Err(e)) => Err(Error::failed(format!("cannot run ssh: {e}"))
            .with_help("ctops needs OpenSSH's `ssh` on PATH")),
        Err(_) => Err(classify(&target.ssh, "timed out", connect_timeout)),
    }
}

/// `ssh`'s arguments for the master: what the openssh crate passes (a control socket, a log,
/// `-f -N`, BatchMode, strict host keys, timeouts), plus the dialer when there is one.
fn master_args(
    target: &Target,
    socket: &Path,
    log: &Path,
    connect_timeout: Duration,
    dialer: Option<&str>,
) -> Vec<OsString> {
    let mut options = vec![
        "ControlPersist=yes".to_string(),
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        format!("ConnectTimeout={}", connect_timeout.as_secs()),
        format!("ServerAliveInterval={}", KEEPALIVE.as_secs()),
    ];
    if let Some(dialer) = dialer {
        options.push(format!("ProxyCommand={dialer}"));
        options.push("ProxyUseFdpass=yes".to_string());
    }
    let mut args: Vec<OsString> = vec!["-E".into(), log.into(), "-S".into(), socket.into()];
    args.extend(["-M", "-f", "-N"].map(OsString::from));
    for option in options {
        args.extend(["-o".into(), option.into()]);
    }
    if let Some(config) = &target.ssh_config {
        args.extend(["-F".into(), config.into()]);
    }
    args.extend(["--".into(), target.ssh.clone().into()]);
    args
}

/// The `ProxyCommand` that has ctops dial the TCP connection itself (see [`dial`]), or
/// None when the ssh config routes the connection its own way (a proxy or jump host, a bind
/// address, several attempts) or wants the address checked (`CheckHostIP`), which ctops
/// then leaves to ssh untouched.
async fn dialer(target: &Target, connect_timeout: Duration) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let mut resolve = tokio::process::Command::new("ssh");
    if let Some(config) = &target.ssh_config {
        resolve.arg("-F").arg(config);
    }
    let out = resolve
        .arg("-G")
        .arg("--")
        .arg(&target.ssh)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())?;
    dialer_for(
        &String::from_utf8_lossy(&out.stdout),
        exe.to_str()?,
        connect_timeout,
    )
}

/// [`dialer`] from what `ssh -G` printed.
fn dialer_for(resolved: &str, exe: &str, connect_timeout: Duration) -> Option<String> {
    let setting = |key: &str| {
        resolved
            .lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.eq_ignore_ascii_case("none"))
    };
    let routed_elsewhere = ["proxycommand", "proxyjump", "bindaddress", "bindinterface"]
        .iter()
        .any(|key| setting(key).is_some());
    let attempts = setting("connectionattempts").unwrap_or("1");
    // ssh checks the address against known_hosts only when it dialed itself.
    let checks_host_ip = setting("checkhostip").is_some_and(|v| v == "yes");
    // `%h` reaches a shell: only plain host names and addresses take this route.
    let plain_host = setting("hostname").is_some_and(|h| {
        !h.starts_with('-')
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
    });
    if routed_elsewhere || attempts != "1" || checks_host_ip || !plain_host {
        return None;
    }
    let family = match setting("addressfamily").unwrap_or("any") {
        "inet" => "inet",
        "inet6" => "inet6",
        _ => "any",
    };
    Some(format!(
        "{} {} --family {family} --timeout {} %h %p",
        super::quote(exe).replace('%', "%%"),
        dial::SUBCOMMAND,
        connect_timeout.as_secs()
    ))
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

/// Turns what ssh said into an error with exit code 3 and a `help:` line.
pub fn classify(host: &str, ssh_said: &str, connect_timeout: Duration) -> Error {
    let said = ssh_said.trim();
    let last_line = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(said)
        .trim();
    // When ctops dialed, its own "connect to host" line says more than ssh's last one
    // ("proxy dialer did not pass back a connection").
    let last_line = said
        .lines()
        .find(|l| l.contains("connect to host"))
        .map_or(last_line, str::trim);
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

    const RESOLVED: &str = "user deploy\nhostname 127.0.0.1\nport 2222\naddressfamily any\nconnectionattempts 1\nproxyusefdpass no\n";

    #[test]
    fn ctops_dials_a_direct_connection_itself() {
        let dialer = dialer_for(RESOLVED, "/opt/my tools/ctops", Duration::from_secs(5)).unwrap();
        assert_eq!(
            dialer,
            "'/opt/my tools/ctops' __ssh-dial --family any --timeout 5 %h %p"
        );
        let v6 = RESOLVED.replace("addressfamily any", "addressfamily inet6");
        assert!(dialer_for(&v6, "/ctops", Duration::from_secs(5))
            .unwrap()
            .contains("--family inet6"));
        // A `%` in the path is not an ssh token.
        assert!(dialer_for(RESOLVED, "/x%h/ctops", Duration::from_secs(5))
            .unwrap()
            .contains("/x%%h/ctops"));
    }

    #[test]
    fn a_connection_the_ssh_config_routes_is_left_to_ssh() {
        for extra in [
            "proxycommand nc %h %p",
            "proxyjump bastion",
            "bindaddress 10.0.0.1",
            "bindinterface eth1",
        ] {
            let resolved = format!("{RESOLVED}{extra}\n");
            assert_eq!(
                dialer_for(&resolved, "/ctops", Duration::from_secs(5)),
                None,
                "{extra}"
            );
        }
        let ip_checked = format!("{RESOLVED}checkhostip yes\n");
        assert_eq!(
            dialer_for(&ip_checked, "/ctops", Duration::from_secs(5)),
            None
        );
        let retries = RESOLVED.replace("connectionattempts 1", "connectionattempts 3");
        assert_eq!(dialer_for(&retries, "/ctops", Duration::from_secs(5)), None);
        // `%h` is pasted into a shell command: anything but a plain name stays with ssh.
        let odd = RESOLVED.replace("hostname 127.0.0.1", "hostname $(touch x)");
        assert_eq!(dialer_for(&odd, "/ctops", Duration::from_secs(5)), None);
        assert_eq!(
            dialer_for("user x\n", "/ctops", Duration::from_secs(5)),
            None
        );
        // `none` is how -G prints an unset proxy.
        let unset = format!("{RESOLVED}proxycommand none\n");
        assert!(dialer_for(&unset, "/ctops", Duration::from_secs(5)).is_some());
    }

    #[test]
    fn the_dialers_own_words_name_the_failure() {
        let said = "ssh: connect to host 127.0.0.1 port 1: Connection refused (os error 111)\nproxy dialer did not pass back a connection";
        let e = classify("h", said, Duration::from_secs(5));
        assert!(
            e.message.contains("unreachable") && e.message.contains("port 1: Connection refused"),
            "{}",
            e.message
        );
    }

    #[test]
    fn auth_help_mentions_batch_mode() {
        let e = classify("h", "Permission denied (publickey)", Duration::from_secs(5));
        assert!(e.help.unwrap().contains("BatchMode"));
    }
}
