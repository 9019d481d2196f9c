//! The pre-deployment checklist of runbook 2.3, run on the local checkout against what the
//! host would deploy: `preflight` prints it, `deploy` runs it before its first change. A
//! check that cannot run says "not checked", never "passed".

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::context::Ctx;
use crate::deployed::Probe;
use crate::error::Error;
use crate::migrations::Head;
use crate::report::Envelope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    NotChecked,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// How to fix a failed check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn passed(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Passed,
        detail: detail.into(),
        fix: None,
    }
}

fn failed(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Failed,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn not_checked(name: &'static str, why: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::NotChecked,
        detail: why.into(),
        fix: None,
    }
}

/// `git -C repo ARGS`, stdout trimmed, or the error text.
fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Every check of the checklist, for the release `probe` would deploy.
pub fn run_checks(ctx: &Ctx, repo: &Path, probe: &Probe) -> Vec<Check> {
    let Ok(head) = git(repo, &["rev-parse", "HEAD"]) else {
        return vec![failed(
            "checkout",
            format!("{} is not a git checkout", repo.display()),
            "run from the application's checkout, or pass --repo DIR",
        )];
    };
    let preflight = ctx.target.deploy.preflight.clone().unwrap_or_default();
    let mut checks = Vec::new();
    checks.push(
        match git(repo, &["status", "--porcelain", "--untracked-files=no"]) {
            Ok(s) if s.is_empty() => passed("clean tree", "no uncommitted changes"),
            Ok(s) => failed(
                "clean tree",
                format!(
                    "uncommitted changes: {}",
                    s.lines()
                        .map(|l| l.get(3..).unwrap_or(l))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "commit or stash them",
            ),
            Err(e) => failed("clean tree", e, "fix the checkout"),
        },
    );
    checks.push(if head == probe.target.commit {
        passed(
            "same commit",
            format!("local HEAD is {} ({})", &head[..12], probe.target.reference),
        )
    } else {
        failed(
            "same commit",
            format!(
                "local HEAD {} is not {} ({}), which the host would deploy",
                &head[..12.min(head.len())],
                &probe.target.commit[..12],
                probe.target.reference
            ),
            "push your commit (or pull), so that what you tested is what deploys",
        )
    });
    let local_version = git(repo, &["show", "HEAD:VERSION"])
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    // Re-deploying the running commit (to converge, or `--force` to rebuild) ships no new
    // version: the checks that a release is new do not apply to it.
    if probe.target.commit == probe.current.commit {
        let why = "the running commit is deployed again: no new version to check";
        checks.push(not_checked("version", why));
        checks.push(not_checked("changelog", why));
    } else {
        checks.push(version_check(&local_version, &probe.current.version));
        checks.push(changelog_check(repo, &local_version));
    }
    let pattern = preflight.commit_pattern.clone().unwrap_or_default();
    checks.push(commit_messages(repo, &probe.current.commit, &pattern));
    checks.push(match &probe.target_head {
        Head::Known(Some(head)) => passed("one migration head", format!("head {head}")),
        Head::Known(None) => passed(
            "one migration head",
            "the versions folder holds no revision yet (base)",
        ),
        Head::Absent => not_checked(
            "one migration head",
            "the release has no alembic.ini (no migrations found)",
        ),
        Head::Unknown(why) => failed(
            "one migration head",
            why.clone(),
            "set `deploy.migrate.versions` to the scripts' folder",
        ),
    });
    checks.push(not_checked(
        "migrations round trip",
        "upgrade -> downgrade -> upgrade on a scratch database needs the new image, built by the deploy itself",
    ));
    checks.push(match preflight.test_command.as_deref() {
        Some([program, args @ ..]) => {
            match Command::new(program).args(args).current_dir(repo).status() {
                Ok(s) if s.success() => passed(
                    "tests",
                    format!(
                        "`{}` passed",
                        preflight.test_command.clone().unwrap_or_default().join(" ")
                    ),
                ),
                Ok(s) => failed(
                    "tests",
                    format!("`{program}` exited {s}"),
                    "fix the failing tests",
                ),
                Err(e) => failed(
                    "tests",
                    format!("cannot run `{program}`: {e}"),
                    "fix `deploy.preflight.test_command`",
                ),
            }
        }
        _ => not_checked("tests", "no `deploy.preflight.test_command` configured"),
    });
    checks
}

/// CHANGELOG.md at HEAD has a section for the local VERSION.
fn changelog_check(repo: &Path, local_version: &str) -> Check {
    match git(repo, &["show", "HEAD:CHANGELOG.md"]) {
        Ok(text) if has_changelog_section(&text, local_version) => passed(
            "changelog",
            format!("CHANGELOG.md has a section for {local_version}"),
        ),
        Ok(_) => failed(
            "changelog",
            format!("CHANGELOG.md has no section for {local_version}"),
            format!("add `## [{local_version}] - DATE` with the changes"),
        ),
        Err(_) => failed(
            "changelog",
            "no CHANGELOG.md",
            "add a CHANGELOG.md (Keep a Changelog)",
        ),
    }
}

fn version_check(local: &str, running: &str) -> Check {
    match (
        semver::Version::parse(local),
        semver::Version::parse(running),
    ) {
        (Ok(l), Ok(r)) if l > r => passed("version", format!("VERSION {l} > {r} on the host")),
        (Ok(l), Ok(r)) => failed(
            "version",
            format!("VERSION {l} is not greater than {r} on the host"),
            "bump VERSION (semver) for this release",
        ),
        (Err(e), _) => failed(
            "version",
            format!("VERSION {local:?} is not semver: {e}"),
            "write MAJOR.MINOR.PATCH in VERSION",
        ),
        (_, Err(_)) => not_checked(
            "version",
            format!("the host runs VERSION {running:?}, which is not semver"),
        ),
    }
}

fn has_changelog_section(text: &str, version: &str) -> bool {
    !version.is_empty()
        && text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("## ")
                && (l.contains(&format!("[{version}]")) || l[3..].trim_start().starts_with(version))
        })
}

fn commit_messages(repo: &Path, deployed: &str, pattern: &str) -> Check {
    let re = match regex::Regex::new(pattern) {
        Ok(re) => re,
        Err(e) => {
            return failed(
                "commit messages",
                format!("invalid commit_pattern: {e}"),
                "fix `deploy.preflight.commit_pattern`",
            )
        }
    };
    let range = format!("{deployed}..HEAD");
    match git(repo, &["log", "--format=%h %s", &range]) {
        Err(_) => not_checked(
            "commit messages",
            format!(
                "the deployed commit {} is not in the local history",
                &deployed[..12.min(deployed.len())]
            ),
        ),
        Ok(log) => {
            let bad: Vec<&str> = log
                .lines()
                .filter(|l| !re.is_match(l.split_once(' ').map_or("", |(_, s)| s)))
                .collect();
            if bad.is_empty() {
                passed(
                    "commit messages",
                    format!("{} commits match the pattern", log.lines().count()),
                )
            } else {
                failed(
                    "commit messages",
                    format!("not matching `{pattern}`: {}", bad.join("; ")),
                    "reword them (git rebase -i) before deploying",
                )
            }
        }
    }
}

/// Prints the checklist; an error (exit 4) when a check failed.
pub fn report(ctx: &Ctx, checks: &[Check], as_json_doc: bool) -> Result<(), Error> {
    let failed: Vec<&Check> = checks
        .iter()
        .filter(|c| c.verdict == Verdict::Failed)
        .collect();
    if as_json_doc && ctx.out.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            checks: &'a [Check],
        }
        let _ = ctx.out.json_doc(&Doc {
            envelope: Envelope::new("preflight", ctx, failed.is_empty()),
            checks,
        });
    }
    if !ctx.out.json || !as_json_doc {
        for c in checks {
            let mark = match c.verdict {
                Verdict::Passed => ctx.out.mark(true),
                Verdict::Failed => ctx.out.mark(false),
                Verdict::NotChecked => "not checked".to_string(),
            };
            ctx.out.status(format!("  {mark} {}: {}", c.name, c.detail));
            if let Some(fix) = &c.fix {
                ctx.out.status(format!("      fix: {fix}"));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        let names: Vec<&str> = failed.iter().map(|c| c.name).collect();
        Err(Error::refused(format!("preflight failed: {}", names.join(", ")))
            .with_help("fix what the checks say, or deploy with --skip-preflight --reason TEXT (recorded in the audit log)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_must_grow() {
        assert_eq!(version_check("1.27.1", "1.27.0").verdict, Verdict::Passed);
        assert_eq!(version_check("1.27.0", "1.27.0").verdict, Verdict::Failed);
        assert_eq!(version_check("1.10.0", "1.9.0").verdict, Verdict::Passed);
        assert_eq!(version_check("x", "1.0.0").verdict, Verdict::Failed);
        assert_eq!(version_check("1.0.0", "").verdict, Verdict::NotChecked);
    }

    #[test]
    fn changelog_sections_are_found() {
        let text = "# Changelog\n\n## [Unreleased]\n\n## [1.27.1] - 2026-01-13\n- x\n";
        assert!(has_changelog_section(text, "1.27.1"));
        assert!(!has_changelog_section(text, "1.27.2"));
        assert!(has_changelog_section("## 2.0.0 (2026-01-01)\n", "2.0.0"));
    }
}
