//! One module per runbook section. Each says *what* to run; `remote` and `compose` know how.

pub mod access;
pub mod backup;
pub mod config_check;
pub mod deploy;
pub mod doctor;
pub mod env;
pub mod health;
pub mod incident;
pub mod lock;
pub mod logs;
pub mod preflight;
pub mod releases;
pub mod restore;
pub mod rollback;
pub mod rotate;
pub mod service;
pub mod setup;
pub mod stats;
pub mod status;
pub mod switch;
pub mod update;

pub use crate::report::{error_object, print_dry_run, Envelope};

/// Runs a host script (or any command) and fails unless it exits 0, naming the `step` (never
/// the script's text) and showing the last lines of its stderr.
pub async fn run_step(
    remote: &crate::remote::Remote,
    cmd: &crate::remote::RemoteCommand,
    step: &str,
) -> Result<crate::remote::Captured, crate::error::Error> {
    let out = remote.run(cmd).await?;
    if out.status == 0 {
        return Ok(out);
    }
    let stderr = out.stderr_text();
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
    Err(crate::error::Error::failed(format!(
        "{step} on {} failed (exit {}){}",
        remote.host(),
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    )))
}

/// Refuses what the arguments alone show to be wrong (a backup name, an `.env` key, an
/// assignment) before discovery, the pre-change checks or anything else reaches the host.
pub fn check_input(command: &crate::cli::Command) -> Result<(), crate::error::Error> {
    use crate::cli::Command;
    match command {
        Command::Backup(c) => backup::check_input(c),
        Command::Restore(c) => restore::check_input(c),
        Command::Env(c) => env::check_input(c),
        Command::Rotate(args) => rotate::check_input(args),
        _ => Ok(()),
    }
}

/// Streams a command's output to stderr as it comes (a build or an upgrade takes minutes),
/// above a spinner with the elapsed time on a terminal; with `-q`, only a failure's output
/// is shown. `what` names it in the error.
pub async fn run_streamed(
    ctx: &crate::context::Ctx,
    remote: &crate::remote::Remote,
    cmd: &crate::remote::RemoteCommand,
    what: &str,
) -> Result<(), crate::error::Error> {
    let (status, said) = if ctx.out.quiet {
        let out = remote.run(cmd).await?;
        (out.status, out.stderr_text())
    } else if ctx.out.shows_progress() {
        // On a terminal: the output scrolls above a spinner with the elapsed time.
        let mut spinner = ctx.out.spinner(what);
        let timeout = Some(remote.timeout_of(cmd));
        let status = remote
            .stream_lines(cmd, timeout, |line| spinner.println(line))
            .await;
        crate::fault::pause_point("pause-after-stream", |m| spinner.println(m)).await;
        spinner.finish();
        (status?, "see above".to_string())
    } else {
        let timeout = Some(remote.timeout_of(cmd));
        let status = remote
            .stream(cmd, &mut crate::output::local_stderr(), timeout)
            .await?;
        (status, "see above".to_string())
    };
    if status == 0 {
        Ok(())
    } else {
        Err(crate::error::Error::failed(format!(
            "`{what}` exited {status} on {}: {}",
            remote.host(),
            said.trim()
        )))
    }
}

/// Each runbook section reads on its own: no section module names another (the deploy and
/// rollback engine, `switch`, is theirs alone). What sections share lives below `ops/`.
#[cfg(test)]
mod layering {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Which section may use which other section.
    const ALLOWED: &[(&str, &str)] = &[("deploy", "switch"), ("rollback", "switch")];

    /// The section modules: `ops/x.rs` and `ops/x/`.
    fn sections(ops: &Path) -> BTreeSet<String> {
        std::fs::read_dir(ops)
            .unwrap()
            .flatten()
            .map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .filter(|n| n != "mod")
            .collect()
    }

    /// The sections `code` (one file of section `own`) refers to through `super::…` or
    /// `crate::ops::…` paths, braces included, comments left out.
    fn references(code: &str, own: &str, sections: &BTreeSet<String>) -> BTreeSet<String> {
        let code: String = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = BTreeSet::new();
        for prefix in ["super::", "crate::ops::"] {
            for (at, _) in code.match_indices(prefix) {
                let mut rest = &code[at + prefix.len()..];
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                }
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap_or(""))
                        .collect(),
                    None => vec![rest
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")],
                };
                for name in names {
                    if name != own && sections.contains(name) {
                        found.insert(name.to_string());
                    }
                }
            }
        }
        found
    }

    fn rust_files(path: &Path) -> Vec<std::path::PathBuf> {
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .unwrap()
                .flatten()
                .flat_map(|e| rust_files(&e.path()))
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        }
    }

    #[test]
    fn no_section_module_refers_to_another() {
        let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
        let sections = sections(&ops);
        assert!(sections.contains("backup") && sections.contains("switch"));
        let mut wrong = Vec::new();
        for own in &sections {
            let path = if ops.join(own).is_dir() {
                ops.join(own)
            } else {
                ops.join(format!("{own}.rs"))
            };
            for file in rust_files(&path) {
                let code = std::fs::read_to_string(&file).unwrap();
                for other in references(&code, own, &sections) {
                    if !ALLOWED.contains(&(own.as_str(), other.as_str())) {
                        wrong.push(format!("{} uses ops::{other}", file.display()));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "section modules must not use each other (move what they share below ops/):\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn the_scan_sees_every_spelling_of_a_reference() {
        let sections: BTreeSet<String> = ["backup", "env", "restore", "switch"]
            .map(String::from)
            .into();
        let code = "use super::backup::Manifest;\n\
                    use super::{env, Envelope};\n\
                    fn f() { crate::ops::restore::run(); super::super::switch::x(); }\n\
                    // super::env in a comment does not count\n\
                    use super::run_step;";
        let found = references(code, "env", &sections);
        assert_eq!(
            found,
            ["backup", "restore", "switch"].map(String::from).into()
        );
        assert!(references("use super::*;", "backup", &sections).is_empty());
    }
}
