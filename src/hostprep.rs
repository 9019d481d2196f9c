//! What a host needs before the first changing command, as facts read in one round trip
//! (`scripts/setup-probe.sh`), and the root commands that make each fact hold. `ctops setup`
//! runs the commands; `ctops doctor` can read the same facts.
//!
//! The commands are argvs (no shell text): run through the target's `sudo` prefix, or
//! printed, quoted, for a person to run as root.

use std::collections::BTreeMap;

use crate::config::Target;
use crate::error::Error;
use crate::remote::{assign, join_quoted, Remote, RemoteCommand};

const PROBE: &str = include_str!("scripts/setup-probe.sh");

/// The files of the state dir that every operator appends to, locks or replaces.
const SHARED_FILES: [&str; 6] = ["lock", ".mutex", "ops.flock", "last", "journal", "*.jsonl"];

/// The probe's answers: `key -> ok | missing | reason`.
#[derive(Debug, Clone, Default)]
pub struct Facts(BTreeMap<String, String>);

impl Facts {
    pub fn parse(text: &str) -> Self {
        Facts(
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The answer for `key`; a key the probe did not print reads as "not checked", never ok.
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("not checked", String::as_str)
    }

    pub fn ok(&self, key: &str) -> bool {
        self.get(key) == "ok"
    }

    /// The login the probe ran as.
    pub fn user(&self) -> &str {
        self.0.get("user").map_or("", String::as_str)
    }
}

/// Reads the facts over `remote` (read-only; `with_remote` also tries the checkout's git
/// remote, which needs the network and the host's credentials).
pub async fn probe(remote: &Remote, t: &Target, with_remote: bool) -> Result<Facts, Error> {
    let vars = [
        assign("D", &t.state_dir),
        assign("B", &t.backup_dir),
        assign("G", &t.group),
        assign("C", &t.dir),
        assign("REMOTE", if with_remote { "1" } else { "0" }),
    ]
    .join("\n");
    let cmd = RemoteCommand::sh(&format!("{vars}\n{PROBE}"), t.compose.clone()).read_only();
    let out = remote.run(&cmd).await?;
    if out.status != 0 {
        // The step and the probe's last stderr lines, never its text.
        let stderr = out.stderr_text();
        let lines: Vec<&str> = stderr.trim().lines().collect();
        return Err(Error::failed(format!(
            "reading what {} has failed (exit {}): {}",
            remote.host(),
            out.status,
            lines[lines.len().saturating_sub(3)..].join(" / ")
        )));
    }
    Ok(Facts::parse(&out.stdout_text()))
}

/// One thing setup makes hold: the commands, in order, to run as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    pub commands: Vec<Vec<String>>,
}

impl Fix {
    fn of(commands: Vec<Vec<&str>>) -> Self {
        Fix {
            commands: commands
                .into_iter()
                .map(|c| c.into_iter().map(str::to_string).collect())
                .collect(),
        }
    }

    /// The one line a person runs as root (`a && b`), every word quoted.
    pub fn as_root(&self) -> String {
        self.commands
            .iter()
            .map(|c| join_quoted(c))
            .collect::<Vec<_>>()
            .join(" && ")
    }
}

/// The operators' group, when it does not exist.
pub fn group(t: &Target) -> Fix {
    Fix::of(vec![vec!["groupadd", &t.group]])
}

/// The login in the group (effective at its next login).
pub fn member(t: &Target, user: &str) -> Fix {
    Fix::of(vec![vec!["usermod", "-aG", &t.group, user]])
}

/// `state_dir` (and its `ops/`) 2770, group-owned; when it exists already, what is inside
/// shared with the group too (files that may hold secrets keep their private modes).
pub fn state_dir(t: &Target, exists: bool) -> Fix {
    let d = t.state_dir.trim_end_matches('/');
    let ops = format!("{d}/ops");
    let mut commands = vec![
        vec!["install", "-d", "-m", "2770", "-g", &t.group, d],
        vec!["install", "-d", "-m", "2770", "-g", &t.group, &ops],
    ];
    let mut names = vec!["("];
    for (i, name) in SHARED_FILES.iter().enumerate() {
        if i > 0 {
            names.push("-o");
        }
        names.extend(["-name", name]);
    }
    names.push(")");
    if exists {
        commands.push(vec!["chgrp", "-R", &t.group, d]);
        commands.push(vec![
            "find", d, "-type", "d", "-exec", "chmod", "2770", "{}", "+",
        ]);
        let mut files = vec!["find", d, "-type", "f"];
        files.extend(names.iter().copied());
        files.extend(["-exec", "chmod", "0660", "{}", "+"]);
        commands.push(files);
    }
    Fix::of(commands)
}

/// `backup_dir` 2770, group-owned; an existing one's backups given to the group (their
/// modes stay: a dump is 0640, a `.env` copy 0600).
pub fn backup_dir(t: &Target, exists: bool) -> Fix {
    let b = t.backup_dir.trim_end_matches('/');
    let mut commands = vec![vec!["install", "-d", "-m", "2770", "-g", &t.group, b]];
    if exists {
        commands.push(vec!["chgrp", "-R", &t.group, b]);
    }
    Fix::of(commands)
}

/// The checkout shared with the group, so that another operator's login can deploy: git
/// creates what it adds group-writable (core.sharedRepository), every folder is setgid and
/// group-writable, every file group-readable (`.env` too: the group is `docker`'s, which
/// can read it through any container anyway).
pub fn checkout(t: &Target) -> Fix {
    let c = t.dir.trim_end_matches('/');
    let git_config = format!("{c}/.git/config");
    Fix::of(vec![
        vec![
            "git",
            "config",
            "--file",
            &git_config,
            "core.sharedRepository",
            "group",
        ],
        vec!["chgrp", "-R", &t.group, c],
        vec!["chmod", "-R", "g+rwX", c],
        vec!["find", c, "-type", "d", "-exec", "chmod", "g+s", "{}", "+"],
    ])
}

/// git's consent to a checkout owned by another login (the system config: every login's).
pub fn safe_directory(t: &Target) -> Fix {
    let c = t.dir.trim_end_matches('/');
    Fix::of(vec![vec![
        "git",
        "config",
        "--system",
        "--add",
        "safe.directory",
        c,
    ]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let text = r#"
            [targets.t]
            ssh = "h"
            state_dir = "/var/lib/ctops it's"
        "#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctops.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::load(&path, crate::config::Origin::Named, None)
            .unwrap()
            .target
    }

    #[test]
    fn facts_not_printed_are_not_ok() {
        let f = Facts::parse("user\tdeploy\nstate\tok\nbackup\tmissing\n");
        assert!(f.ok("state") && !f.ok("backup") && !f.ok("docker"));
        assert_eq!(f.get("docker"), "not checked");
        assert_eq!(f.user(), "deploy");
    }

    #[test]
    fn the_root_commands_are_quoted_and_name_the_group() {
        let t = target();
        assert_eq!(t.group, "docker");
        let fix = state_dir(&t, false);
        assert_eq!(
            fix.as_root(),
            "install -d -m 2770 -g docker '/var/lib/ctops it'\\''s' && install -d -m 2770 -g docker '/var/lib/ctops it'\\''s/ops'"
        );
        let existing = state_dir(&t, true).as_root();
        assert!(
            existing.contains("-name ops.flock -o -name last")
                && existing.contains("'*.jsonl'")
                && existing.ends_with("-exec chmod 0660 '{}' +"),
            "{existing}"
        );
        assert_eq!(member(&t, "ops").as_root(), "usermod -aG docker ops");
    }
}
