//! `ctops setup` on a host without its state dir, as the non-root `deploy` login: with a
//! sudo rule it prepares the host so that `deploy` and then a second login of the group
//! (`calm`, the second profile's login, through its own sshd) deploy; run again it changes
//! nothing; without the rule, the commands it prints, run as root, do the same. Outcomes are
//! read on the host: modes, groups, the deployed commit.
//!
//! Each test takes `deploy` out of the `docker` group first (setup must put it back, and
//! reconnect before it checks Docker), works in a fresh state and backup dir under
//! /var/lib/ctops-setup-*, and puts everything back at the end, also on failure ([`Guard`]).

use std::path::{Path, PathBuf};

use crate::util::*;

const ORIGIN: &str = "/srv/ctops sandbox/origin.git";
/// What `ctops setup` runs through `sudo -n`: the rule the README gives for it.
const SUDO_RULE: &str = "deploy ALL=(root) NOPASSWD: /usr/bin/install, /usr/bin/chgrp, /usr/bin/chmod, /usr/bin/find, /usr/sbin/usermod, /usr/sbin/groupadd, /usr/local/bin/git, /usr/bin/git\n";

/// Everything a test changed on the host, put back when it ends (also after a panic).
struct Guard {
    root: String,
    sudoers: String,
    snapshot: PathBuf,
    _config_dir: tempfile::TempDir,
}

impl Guard {
    fn new() -> Guard {
        let id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let config_dir = tempfile::tempdir().unwrap();
        let snapshot = config_dir.path().join("checkout-modes");
        // The checkout's modes and groups, to put back exactly.
        host(&format!(
            "find '{CHECKOUT}' ! -type l -printf '%m %g %p\\n' > '{}'",
            snapshot.display()
        ));
        Guard {
            root: format!("/var/lib/ctops-setup-{id}"),
            sudoers: format!("/etc/sudoers.d/ctops-setup-test-{id}"),
            snapshot,
            _config_dir: config_dir,
        }
    }

    fn state_dir(&self) -> String {
        format!("{}/state", self.root)
    }

    fn backup_dir(&self) -> String {
        format!("{}/backups", self.root)
    }

    /// A config for `deploy` (or, with `calm`, the second login through the second
    /// profile's sshd) with this test's state and backup dirs.
    fn config(&self, calm: bool) -> PathBuf {
        let dir = self
            ._config_dir
            .path()
            .join(if calm { "calm" } else { "deploy" });
        std::fs::create_dir_all(&dir).unwrap();
        let (state, backups) = (self.state_dir(), self.backup_dir());
        variant_config(&dir, |text| {
            let text = text
                .replace(
                    "state_dir = \"/srv/ctops sandbox/state\"",
                    &format!("state_dir = {state:?}"),
                )
                .replace(
                    "backup_dir = \"/srv/ctops sandbox/backups\"",
                    &format!("backup_dir = {backups:?}"),
                );
            assert!(text.contains(&state) && text.contains(&backups));
            if !calm {
                return text;
            }
            let second = std::env::var("CTOPS_SANDBOX2")
                .unwrap_or_else(|_| "/var/tmp/ctops-sandbox2".into());
            let sandbox_ssh = sandbox().join("ssh_config").display().to_string();
            text.replace("ssh = \"trader-psy-sandbox\"", "ssh = \"calm-sandbox2\"")
                .replace(&sandbox_ssh, &format!("{second}/ssh_config"))
        })
    }

    /// `deploy` out of the `docker` group: setup must put it back.
    fn leave_docker(&self) {
        host("gpasswd -d deploy docker >/dev/null");
    }

    fn grant_sudo(&self) {
        std::fs::write(&self.sudoers, SUDO_RULE).unwrap();
        host(&format!(
            "chmod 0440 '{0}' && visudo -cqf '{0}'",
            self.sudoers
        ));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let checkout_back = format!(
            "chown -R deploy:deploy '{CHECKOUT}'; \
             find '{CHECKOUT}' -type d -exec chmod g-s {{}} +; \
             while read -r m g p; do chmod \"$m\" \"$p\"; chgrp \"$g\" \"$p\"; done < '{}'; \
             git config --file '{CHECKOUT}/.git/config' --unset core.sharedRepository",
            self.snapshot.display()
        );
        for script in [
            "gpasswd -a deploy docker >/dev/null".to_string(),
            format!("rm -f '{}'", self.sudoers),
            format!("rm -rf '{}'", self.root),
            checkout_back,
            format!("git config --system --fixed-value --unset-all safe.directory '{CHECKOUT}'"),
            format!("git config --system --fixed-value --unset-all safe.directory '{ORIGIN}'"),
            format!("runuser -u deploy -- git -C '{ORIGIN}' branch -q -D {NEW_FOLDER_BRANCH} 2>/dev/null"),
        ] {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .status();
        }
    }
}

const NEW_FOLDER_BRANCH: &str = "itest-new-folder";
const NEW_FOLDER: &str = "itest-added/deeper";

/// Pushes a branch to the sandbox's origin (as its owner, deploy): `main` plus a new folder
/// holding a file. Returns its commit. The Guard deletes the branch.
fn push_branch_with_a_new_folder() -> String {
    host(&format!(
        "runuser -u deploy -- sh -c 'set -e; d=$(mktemp -d); \
         git clone -q \"{ORIGIN}\" \"$d\"; cd \"$d\"; git checkout -q -B {NEW_FOLDER_BRANCH} origin/main; \
         mkdir -p {NEW_FOLDER}; echo added > {NEW_FOLDER}/file.txt; git add {NEW_FOLDER}; \
         git -c user.email=t@t -c user.name=t commit -qm \"test: a new folder\"; \
         git push -q -f origin {NEW_FOLDER_BRANCH}; cd /; rm -rf \"$d\"'"
    ));
    commit_of(NEW_FOLDER_BRANCH)
}

fn setup(config: &Path) -> Run {
    ctops(["--config", config.to_str().unwrap(), "setup", "--json"]).run()
}

fn deploy(config: &Path, reference: &str) -> Run {
    ctops([
        "--config",
        config.to_str().unwrap(),
        "deploy",
        "--ref",
        reference,
        "--skip-preflight",
        "--reason",
        "setup test",
        "--json",
    ])
    .run()
}

fn commit_of(reference: &str) -> String {
    host(&format!(
        "git -c safe.directory='*' -C '{ORIGIN}' rev-parse '{reference}^{{commit}}'"
    ))
    .trim()
    .to_string()
}

fn stat(path: &str) -> String {
    host(&format!("stat -c '%a %G' '{path}'"))
        .trim()
        .to_string()
}

fn step<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {doc:#}"))
}

/// The state dir a deploy left: shared with the group, its shared files 0660 whatever the
/// umask, its private files still private.
fn assert_state_shared(state: &str) {
    assert_eq!(stat(state), "2770 docker");
    for file in [
        "last",
        "audit.jsonl",
        "releases.jsonl",
        ".mutex",
        "ops.flock",
    ] {
        assert_eq!(stat(&format!("{state}/{file}")), "660 docker", "{file}");
    }
    let journals = host(&format!(
        "stat -c '%a %G' '{state}'/ops/*/journal | sort -u"
    ));
    assert_eq!(journals.trim(), "660 docker");
    let scripts = host(&format!("stat -c '%a' '{state}'/ops/*/script.sh | sort -u"));
    assert_eq!(scripts.trim(), "600", "the runner's script stays private");
}

#[test]
fn setup_with_a_sudo_rule_prepares_a_fresh_host_for_two_logins_of_the_group() {
    let _lock = exclusive();
    reset_host();
    let guard = Guard::new();
    guard.grant_sudo();
    let (state, backups) = (guard.state_dir(), guard.backup_dir());
    let mine = guard.config(false);

    // Before: a changing command points at setup.
    let refused = deploy(&mine, "v1.27.0").expect(4);
    assert!(
        refused.stderr().contains("help: run `ctops setup`"),
        "{}",
        refused.describe()
    );
    guard.leave_docker();

    let run = setup(&mine).expect(0);
    let doc = run.json();
    assert_schema("setup.json", &doc);
    assert_eq!(doc["changed"], true, "{}", run.describe());
    for name in [
        "membership",
        "state_dir",
        "backup_dir",
        "checkout",
        "safe.directory",
    ] {
        assert_eq!(step(&doc, name)["status"], "done", "{name}: {doc:#}");
    }
    // Checked on the new login, where the new membership counts.
    for name in ["docker", "compose", "git remote"] {
        assert_eq!(step(&doc, name)["status"], "ok", "{name}: {doc:#}");
    }
    assert_eq!(stat(&state), "2770 docker");
    assert_eq!(stat(&format!("{state}/ops")), "2770 docker");
    assert_eq!(stat(&backups), "2770 docker");
    assert!(host("id -Gn deploy")
        .split_whitespace()
        .any(|g| g == "docker"));

    deploy(&mine, "v1.27.0").expect(0);
    assert_eq!(head_commit(), commit_of("v1.27.0"));
    assert_state_shared(&state);

    // A second login of the group deploys too. (The sandbox's origin is a local repository
    // owned by deploy: git wants its consent there too; a real origin is reached with the
    // login's own key.)
    host(&format!(
        "git config --system --add safe.directory '{ORIGIN}'"
    ));
    let theirs = guard.config(true);
    let run = deploy(&theirs, "main").expect(0);
    assert_eq!(run.json()["to"]["commit"], commit_of("main"));
    assert_eq!(head_commit(), commit_of("main"));
    let users = host(&format!("stat -c '%U' '{state}'/ops/*/journal | sort -u"));
    assert_eq!(
        users.split_whitespace().collect::<Vec<_>>(),
        ["calm", "deploy"]
    );
    assert_state_shared(&state);

    // A release that adds a folder, deployed by one login (umask 022, as logins get it), then
    // replaced by the other login's deploy, which must empty and remove that folder: the
    // folder keeps the group's write bit.
    let added = push_branch_with_a_new_folder();
    let run = deploy(&theirs, NEW_FOLDER_BRANCH).expect(0);
    assert_eq!(run.json()["to"]["commit"], added);
    assert_eq!(host("runuser -u calm -- sh -c umask").trim(), "0022");
    assert_eq!(stat(&format!("{CHECKOUT}/{NEW_FOLDER}")), "2775 docker");
    deploy(&mine, "v1.27.0").expect(0);
    assert_eq!(head_commit(), commit_of("v1.27.0"));
    assert!(!host_ok(&format!("test -e '{CHECKOUT}/{NEW_FOLDER}'")));

    // Run again: nothing to do, and it says so.
    let run = setup(&mine).expect(0);
    let doc = run.json();
    assert_schema("setup.json", &doc);
    assert_eq!(doc["changed"], false, "{}", run.describe());
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "ok"),
        "{doc:#}"
    );
    let human = ctops(["--config", mine.to_str().unwrap(), "setup"])
        .run()
        .expect(0);
    assert!(
        human.stderr().contains("setup changed nothing"),
        "{}",
        human.describe()
    );
}

#[test]
fn setup_without_a_sudo_rule_prints_the_root_commands_that_prepare_the_host() {
    let _lock = exclusive();
    reset_host();
    let guard = Guard::new();
    guard.leave_docker();
    let state = guard.state_dir();
    let mine = guard.config(false);

    let run = setup(&mine).expect(4);
    let doc = run.json();
    assert_schema("setup.json", &doc);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["changed"], false, "{}", run.describe());
    assert!(
        !host_ok(&format!("test -e '{state}'")),
        "nothing was created"
    );
    let commands: Vec<String> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "todo")
        .filter_map(|s| s["command"].as_str().map(str::to_string))
        .collect();
    assert!(
        commands.iter().any(|c| c == "usermod -aG docker deploy"),
        "{commands:?}"
    );
    // What a person does: run them as root.
    for command in &commands {
        host(command);
    }
    deploy(&mine, "v1.27.0").expect(0);
    assert_eq!(head_commit(), commit_of("v1.27.0"));
    assert_state_shared(&state);
    assert_eq!(stat(&guard.backup_dir()), "2770 docker");
}
