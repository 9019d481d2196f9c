//! The compose verbs, `exec` and `disk` against the sandbox stack.

use crate::util::*;

fn started_at(service: &str) -> String {
    host(&format!(
        "docker inspect -f '{{{{.State.StartedAt}}}}' {}",
        container(service)
    ))
}

#[test]
fn down_and_rebuild_without_a_tty_or_yes_change_nothing() {
    let _guard = shared();
    let before: Vec<String> = ["api", "bot", "postgres"]
        .iter()
        .map(|s| started_at(s))
        .collect();
    for verb in ["down", "rebuild"] {
        let run = sandbox_ctops([verb]).run().expect(4);
        assert!(run.stderr().contains("--yes"), "{}", run.describe());
    }
    let after: Vec<String> = ["api", "bot", "postgres"]
        .iter()
        .map(|s| started_at(s))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn restart_restarts_only_the_named_service() {
    let _guard = exclusive();
    let (api, bot) = (started_at("api"), started_at("bot"));
    let doc = sandbox_ctops(["restart", "bot", "--json"])
        .run()
        .expect(0)
        .json();
    assert_eq!(doc["command"], "restart");
    assert_schema("service.json", &doc);
    assert_ne!(started_at("bot"), bot, "bot restarted");
    assert_eq!(started_at("api"), api, "api untouched");
    wait_healthy();
    // Hostile names are refused before anything runs.
    sandbox_ctops(["restart", "$(touch /tmp/ctops-pwned)"])
        .run()
        .expect(2);
    assert!(!std::path::Path::new("/tmp/ctops-pwned").exists());
}

#[test]
fn down_then_up_with_yes() {
    let _guard = exclusive();
    let rows = || {
        host("docker exec $(docker ps -q --filter label=com.docker.compose.service=postgres --filter label=com.docker.compose.project=infrastructure) psql -U trader -d trader_psy -tAc 'SELECT count(*) FROM users'")
    };
    let users = rows();
    sandbox_ctops(["down", "--yes"]).run().expect(0);
    let left = host("docker ps -q --filter label=com.docker.compose.project=infrastructure");
    assert!(left.trim().is_empty(), "everything stopped: {left}");
    let volumes =
        host("docker volume ls -q --filter label=com.docker.compose.project=infrastructure");
    assert!(volumes.contains("pgdata"), "volumes kept: {volumes}");
    sandbox_ctops(["up"]).run().expect(0);
    wait_healthy();
    assert_eq!(rows(), users, "the data survived down and up");
}

#[test]
fn exec_passes_stdin_and_stdout_through() {
    let _guard = shared();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "line one\nline 'two' $(x)\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctops"))
        .args(["exec", "redis", "--", "cat"])
        .env("CTOPS_CONFIG", sandbox_config())
        .env("HOME", dir.path())
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(&input).unwrap());
    let run = sandbox_ctops(["exec", "redis", "--", "sh", "-c", "exit 3"])
        .run()
        .expect(1);
    assert!(run.stderr().contains("exited 3"), "{}", run.describe());
}

#[test]
fn disk_lists_filesystems_and_the_largest_container_logs() {
    let _guard = shared();
    let doc = sandbox_ctops(["disk", "--json"]).run().expect(0).json();
    assert_schema("disk.json", &doc);
    assert!(doc["df"].as_str().unwrap().contains("Filesystem"));
    let logs = doc["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["container"].as_str().unwrap().contains("bot")
                && l["bytes"].as_u64().unwrap() > 0),
        "{doc:#}"
    );
}

/// Builds an image of our own from the sandbox's base, unused by any container.
fn build_unused_image(tag: &str, label: &str) -> String {
    host(&format!(
        "printf 'FROM sandbox-base\\nLABEL ctops.sandbox=1 ctops.test={label}\\n' | docker build -q -t {tag} - >/dev/null && docker images -q --no-trunc {tag}"
    ))
    .trim()
    .to_string()
}

#[test]
fn prune_removes_unused_images_but_keeps_the_last_releases() {
    let _guard = exclusive();
    reset_host();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    host(&format!(
        "printf '%s\\n' '{{\"at\":\"2026-11-26T10:00:00Z\",\"result\":\"deployed\",\"ref\":\"v0\",\"commit\":\"{commit}\"}}' >> '/srv/ctops sandbox/state/releases.jsonl' && chown deploy: '/srv/ctops sandbox/state/releases.jsonl'"
    ));
    let junk = build_unused_image("ctops-prune-junk:1", "junk");
    // Tagged as deploy tags the images it keeps for rollback.
    let kept = build_unused_image(
        &format!("ctops-prune-release:ctops-{}", &commit[..12]),
        "release",
    );
    let exists = |id: &str| host_ok(&format!("docker image inspect {id} >/dev/null 2>&1"));
    assert!(exists(&junk) && exists(&kept));

    sandbox_ctops(["prune"]).run().expect(4);
    assert!(exists(&junk), "no --yes, no TTY: nothing removed");

    let doc = sandbox_ctops(["prune", "--yes", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("prune.json", &doc);
    assert!(!exists(&junk), "an unused image is removed: {doc:#}");
    assert!(exists(&kept), "the image of a recent release is kept");
    assert!(doc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "ctops-prune-junk:1"));
    let volumes =
        host("docker volume ls -q --filter label=com.docker.compose.project=infrastructure");
    assert!(
        volumes.contains("pgdata") && volumes.contains("miniodata"),
        "{volumes}"
    );
    sandbox_ctops(["health"]).run().expect(0);
    host("docker rmi -f ctops-prune-release:ctops-0123456789ab >/dev/null");
}

/// A tmux server of its own (its socket in `dir`), so that no other tmux is touched.
fn tmux(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .arg("-S")
        .arg(dir.join("tmux.sock"))
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ends the session however the test ends: psql asked to quit first (a session cut off
/// leaves psql running in the container), then the tmux server.
struct TmuxServer(std::path::PathBuf);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        tmux(&self.0, &["send-keys", "-t", "it", "C-c", "\\q", "Enter"]);
        std::thread::sleep(std::time::Duration::from_secs(1));
        tmux(&self.0, &["kill-server"]);
    }
}

/// Waits until the pane shows `text`; returns the pane.
fn pane_shows(dir: &std::path::Path, text: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pane = tmux(dir, &["capture-pane", "-p", "-t", "it"]);
        if pane.contains(text) || std::time::Instant::now() > deadline {
            return pane;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn exec_it_gives_psql_a_terminal_and_a_prompt_that_answers() {
    let _guard = shared();
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("exit-code");
    let command = format!(
        "env -i PATH=\"$PATH\" HOME={home} TERM=xterm NO_COLOR=1 CTOPS_CONFIG={config} {bin} exec postgres -it -- psql -U trader trader_psy; echo $? > {done}; sleep 30",
        home = dir.path().display(),
        config = sandbox_config().display(),
        bin = env!("CARGO_BIN_EXE_ctops"),
        done = done.display(),
    );
    let _server = TmuxServer(dir.path().to_path_buf());
    tmux(
        dir.path(),
        &[
            "new-session",
            "-d",
            "-s",
            "it",
            "-x",
            "120",
            "-y",
            "30",
            &command,
        ],
    );
    let pane = pane_shows(dir.path(), "trader_psy=#");
    assert!(pane.contains("trader_psy=#"), "no psql prompt:\n{pane}");
    tmux(
        dir.path(),
        // `\g` ends the query: tmux takes a trailing `;` for its own command separator.
        &["send-keys", "-t", "it", "SELECT 6*7 AS answer \\g", "Enter"],
    );
    let pane = pane_shows(dir.path(), "(1 row)");
    assert!(pane.contains("answer") && pane.contains("42"), "{pane}");
    tmux(dir.path(), &["send-keys", "-t", "it", "\\q", "Enter"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !done.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let code = std::fs::read_to_string(&done).unwrap_or_default();
    assert_eq!(code.trim(), "0", "ctops exec -it ended badly");
}
