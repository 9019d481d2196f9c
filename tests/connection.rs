//! The one SSH connection: counted at the sshd, classified when it fails, never left behind.

use std::io::Read;
use std::time::Duration;

use crate::util::*;

/// A copy of the sandbox's ssh_config with one line changed, and a config that uses it.
fn ssh_variant(dir: &std::path::Path, edit: impl FnOnce(String) -> String) -> std::path::PathBuf {
    let ssh = std::fs::read_to_string(sandbox().join("ssh_config")).unwrap();
    let ssh_path = dir.join("ssh_config");
    std::fs::write(&ssh_path, edit(ssh)).unwrap();
    variant_config(dir, |text| {
        text.replace(
            &format!(
                "ssh_config = {:?}",
                sandbox().join("ssh_config").display().to_string()
            ),
            "ssh_config = \"ssh_config\"",
        )
        .replace("connect = \"5s\"", "connect = \"2s\"")
    })
}

fn known_hosts_line(ssh_config: &str) -> String {
    ssh_config
        .lines()
        .find(|l| l.trim_start().starts_with("UserKnownHostsFile"))
        .unwrap()
        .to_string()
}

#[test]
fn every_command_opens_exactly_one_connection() {
    let _lock = exclusive();
    for args in [
        &["health"][..],
        &["status"],
        &["stats"],
        &["logs", "bot", "--tail", "3"],
        &["logs", "--tail", "1"],
    ] {
        let before = ssh_connections();
        sandbox_ctops(args).run().expect(0);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            ssh_connections() - before,
            1,
            "ctops {args:?} opened {} connections",
            ssh_connections() - before
        );
    }
}

#[test]
fn a_changed_host_key_is_refused_with_exit_3() {
    // Alone: the sshd log below must hold this test's connection and no other test's login.
    let _lock = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("other");
    host(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {}",
        key.display()
    ));
    let other = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:2222 {other}")).unwrap();
    let config = ssh_variant(dir.path(), |ssh| {
        let line = known_hosts_line(&ssh);
        ssh.replace(&line, &format!("  UserKnownHostsFile {}", known.display()))
    });
    let log_before = std::fs::read_to_string(sandbox().join("sshd/sshd.log")).unwrap();
    let run = ctops(["--config", config.to_str().unwrap(), "status"])
        .run()
        .expect(3);
    assert!(
        run.stderr().contains("host key mismatch"),
        "{}",
        run.describe()
    );
    assert!(run.stderr().contains("help:"), "{}", run.describe());
    std::thread::sleep(Duration::from_millis(200));
    let log_after = std::fs::read_to_string(sandbox().join("sshd/sshd.log")).unwrap();
    assert!(
        !log_after[log_before.len()..].contains("Accepted"),
        "nothing may run after a host key mismatch"
    );
}

#[test]
fn an_unknown_host_key_is_refused_with_exit_3() {
    let _lock = shared();
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let config = ssh_variant(dir.path(), |ssh| {
        let line = known_hosts_line(&ssh);
        ssh.replace(&line, &format!("  UserKnownHostsFile {}", known.display()))
    });
    let run = ctops(["--config", config.to_str().unwrap(), "health"])
        .run()
        .expect(3);
    assert!(
        run.stderr().contains("unknown host key"),
        "{}",
        run.describe()
    );
}

/// `ctops status` against the sandbox's host on another port: a connection failure (exit 3).
fn status_through_port(port: u16) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = ssh_variant(dir.path(), |ssh| {
        ssh.replace("Port 2222", &format!("Port {port}"))
    });
    ctops(["--config", config.to_str().unwrap(), "status"])
        .run()
        .expect(3)
}

#[test]
fn a_listener_that_never_answers_is_a_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections without ever sending a banner.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let _lock = shared();
    let run = status_through_port(port);
    assert!(
        run.stderr().contains("connect timeout"),
        "{}",
        run.describe()
    );
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn a_closed_port_is_unreachable_and_says_so() {
    // Bound and dropped: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _lock = shared();
    let run = status_through_port(port);
    assert!(
        run.stderr().contains("host unreachable")
            && run
                .stderr()
                .contains(&format!("port {port}: Connection refused")),
        "{}",
        run.describe()
    );
}

/// ctops dials the TCP connection itself (so it has TCP_NODELAY from the first byte), but
/// only where ssh would have dialed directly: a ProxyCommand of the user's is left alone.
#[test]
fn ctops_dials_directly_but_leaves_a_proxy_command_to_ssh() {
    // Alone: it counts connections at the sshd.
    let _lock = exclusive();
    let run = sandbox_ctops(["-v", "status"]).run().expect(0);
    assert!(
        run.stderr().contains("ProxyCommand=") && run.stderr().contains("__ssh-dial"),
        "{}",
        run.describe()
    );

    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("proxy-ran");
    let config = ssh_variant(dir.path(), |ssh| {
        ssh.replace(
            "    Port 2222\n",
            &format!(
                "    Port 2222\n    ProxyCommand bash -c 'touch {}; exec 3<>/dev/tcp/%h/%p; cat <&3 & exec cat >&3'\n",
                marker.display()
            ),
        )
    });
    let before = ssh_connections();
    let run = ctops(["--config", config.to_str().unwrap(), "-v", "status"])
        .run()
        .expect(0);
    assert!(
        marker.exists(),
        "the user's ProxyCommand did not run\n{}",
        run.describe()
    );
    assert!(!run.stderr().contains("__ssh-dial"), "{}", run.describe());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ssh_connections() - before, 1);
}

#[test]
fn a_refused_key_says_what_batch_mode_allows() {
    let _lock = shared();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("stranger");
    host(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {}",
        key.display()
    ));
    let config = ssh_variant(dir.path(), |ssh| {
        let line = ssh
            .lines()
            .find(|l| l.trim_start().starts_with("IdentityFile"))
            .unwrap()
            .to_string();
        ssh.replace(&line, &format!("  IdentityFile {}", key.display()))
    });
    let run = ctops(["--config", config.to_str().unwrap(), "status", "--json"])
        .run()
        .expect(3);
    assert!(
        run.stderr().contains("authentication refused") && run.stderr().contains("BatchMode"),
        "{}",
        run.describe()
    );
    assert_schema("error.json", &run.json());
}

#[test]
fn sigkill_leaves_no_master_after_the_next_invocation() {
    let _lock = shared();
    let control = private_tempdir();
    let (mut child, _home) = sandbox_ctops(["logs", "bot", "-f", "--tail", "1"])
        .env("CTOPS_CONTROL_DIR", control.path())
        .spawn();
    // Wait for the first line: the connection and the remote `logs -f` are up.
    let mut first = [0u8; 1];
    if child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .is_err()
    {
        let mut stderr = String::new();
        child
            .stderr
            .as_mut()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        panic!("ctops logs -f ended early: {:?}\n{stderr}", child.wait());
    }
    let needle = control.path().display().to_string();
    assert!(
        !processes_matching(&needle).is_empty(),
        "a master should run while ctops does"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    sandbox_ctops(["status"])
        .env("CTOPS_CONTROL_DIR", control.path())
        .run()
        .expect(0);
    wait_until(
        "the stale master to be gone",
        Duration::from_secs(5),
        || processes_matching(&needle).is_empty(),
    );
}
