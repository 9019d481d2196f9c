//! What the on-call engineer sees on a real terminal (a tmux pane, colour on): tables whose
//! columns line up on the visible text, confirmations that show the plan at the prompt.

use std::time::Duration;

use crate::pty::*;
use crate::util::*;

/// The table under the line starting with `first_header`, up to the first blank line.
fn table<'a>(screen: &'a str, first_header: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = screen.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(first_header))
        .unwrap_or_else(|| panic!("no table headed {first_header}:\n{screen}"));
    lines[start..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .copied()
        .collect()
}

/// Where each cell starts (in characters, as the terminal places them): the first column,
/// and every non-blank after a run of two or more blanks (cells hold single spaces at most).
fn cell_starts(line: &str) -> Vec<usize> {
    let chars: Vec<char> = line.chars().collect();
    let mut starts = vec![0];
    for i in 2..chars.len() {
        if chars[i] != ' ' && chars[i - 1] == ' ' && chars[i - 2] == ' ' {
            starts.push(i);
        }
    }
    starts
}

/// Every row's cells start where the header's do, and some cell is narrower than its header
/// (the case escape codes in the header skewed).
fn assert_aligned(rows: &[&str], screen: &str) {
    let header = cell_starts(rows[0]);
    let names: Vec<&str> = rows[0].split("  ").filter(|s| !s.is_empty()).collect();
    assert_eq!(header.len(), names.len(), "header cells:\n{screen}");
    let mut narrower = false;
    for row in &rows[1..] {
        assert_eq!(
            cell_starts(row),
            header,
            "a column starts elsewhere than its header in {row:?}:\n{screen}"
        );
        let cells: Vec<&str> = row.split("  ").filter(|s| !s.is_empty()).collect();
        narrower |= cells
            .iter()
            .zip(&names)
            .any(|(c, n)| c.trim().chars().count() < n.trim().chars().count());
    }
    assert!(
        narrower,
        "no cell narrower than its header, the case to test:\n{screen}"
    );
}

/// indicatif's spinner frames (braille).
fn is_spinner_char(c: char) -> bool {
    ('\u{2800}'..='\u{28ff}').contains(&c)
}

/// `  ⠂ gate 3s`: a spinner frame, the step, its elapsed time.
fn is_spinner_line(line: &str) -> bool {
    let line = line.trim();
    line.starts_with(is_spinner_char)
        && line
            .rsplit(' ')
            .next()
            .is_some_and(|t| t.ends_with('s') && t[..t.len() - 1].parse::<u32>().is_ok())
}

/// The pane's command ends with exit 0 and no spinner or counter left on the screen; the
/// last screen.
fn ends_cleared(pane: &Pane) -> String {
    let code = pane.wait_exit(Duration::from_secs(60));
    let end = pane.screen();
    assert_eq!(code, 0, "{end}");
    assert!(
        !end.lines().any(is_spinner_line),
        "the spinner is cleared at the end:\n{end}"
    );
    end
}

/// Off a terminal (a pipe), no spinner: no frames, no carriage returns, no escape codes.
fn assert_no_spinner(run: &Run) {
    for (place, text) in [("stdout", run.stdout()), ("stderr", run.stderr())] {
        assert!(
            !text.contains(is_spinner_char) && !text.contains('\r') && !text.contains('\u{1b}'),
            "a spinner in {place} through a pipe: {}",
            run.describe()
        );
    }
}

/// `health`, `status`, `backup list` and `releases` in a 140-column tmux pane, `TERM` set and
/// `NO_COLOR` unset: styled, and aligned on what the terminal shows.
#[test]
fn tables_line_up_on_a_terminal_with_colour() {
    let _lock = exclusive();
    reset_host();
    // A release history (found + deployed) and a pre-deploy backup, so every table has rows.
    // On the terminal, each step has a spinner with its elapsed time while it runs; the
    // backup's also counts the bytes dumped so far (held after its first 2 KiB by a test
    // pause, long enough to look).
    let deploy = Pane::sandbox_ctops_with(
        &[
            "deploy",
            "--ref",
            "v1.27.0",
            "--skip-preflight",
            "--reason",
            "terminal test",
        ],
        &[("CTOPS_FAULT", "pause-mid-stream")],
    );
    deploy.wait_for(
        "a spinner with the elapsed time under a step",
        Duration::from_secs(90),
        |s| s.lines().any(is_spinner_line),
    );
    deploy.wait_for(
        "the bytes dumped so far under the backup step",
        Duration::from_secs(90),
        |s| {
            s.lines()
                .any(|l| is_spinner_line(l) && l.contains("backup 2.00 KiB at"))
        },
    );
    assert_eq!(
        deploy.wait_exit(Duration::from_secs(180)),
        0,
        "{}",
        deploy.screen()
    );
    assert!(
        !deploy.screen().lines().any(is_spinner_line),
        "the spinner is cleared at the end:\n{}",
        deploy.screen()
    );
    for (args, first_header, min_rows) in [
        (&["health"][..], "CHECK", 5),
        (&["status"][..], "SERVICE", 5),
        (&["backup", "list"][..], "KIND", 1),
        (&["releases"][..], "REF", 2),
    ] {
        let pane = Pane::sandbox_ctops(args);
        let code = pane.wait_exit(Duration::from_secs(60));
        let screen = pane.screen();
        assert_eq!(code, 0, "{args:?}:\n{screen}");
        let rows = table(&screen, first_header);
        assert!(rows.len() > min_rows, "{args:?}: too few rows:\n{screen}");
        assert_aligned(&rows, &screen);
        let raw = pane.raw_screen();
        assert!(
            has_colour_codes(&raw),
            "{args:?}: no colour on a terminal:\n{raw:?}"
        );
        let shown: Vec<String> = visible(&raw)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect();
        assert_eq!(shown.join("\n"), screen, "{args:?}: raw and plain captures");
    }
}

/// Every host script under `src/scripts/` with its longest line found in no other script:
/// counting that line in `-vv`'s output counts how often the script's text was printed.
fn distinctive_lines() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scripts");
    let scripts: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    scripts
        .iter()
        .filter_map(|(name, text)| {
            let unique = text
                .lines()
                .filter(|l| l.trim().len() >= 20 && !l.trim_start().starts_with('#'))
                .filter(|l| {
                    scripts
                        .iter()
                        .all(|(other, t)| other == name || !t.contains(*l))
                })
                .max_by_key(|l| l.len())?;
            Some((name.clone(), unique.to_string()))
        })
        .collect()
}

/// The host scripts `-v` named (`[host] script SHORT = a.sh + b.sh: ...`), and how many
/// distinct scripts it introduced.
fn named_scripts(stderr: &str) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut count = 0;
    for line in stderr.lines() {
        if let Some((_, rest)) = line.split_once("] script ") {
            count += 1;
            let list = rest.split_once(" = ").map_or("", |x| x.1);
            let list = list.split(':').next().unwrap_or_default();
            names.extend(
                list.split(" + ")
                    .map(|n| n.split(" (").next().unwrap().trim().to_string()),
            );
        }
    }
    (names, count)
}

/// Every `<script SHORT>` a call line names was introduced above it.
fn assert_every_script_introduced(stderr: &str) {
    let mut introduced = std::collections::HashSet::new();
    for line in stderr.lines() {
        if let Some((_, rest)) = line.split_once("] script ") {
            introduced.insert(rest.split(' ').next().unwrap().to_string());
        }
        for (i, _) in line.match_indices("<script ") {
            let short = &line[i + 8..i + 20];
            assert!(
                introduced.contains(short),
                "{short} named before it was introduced:\n{stderr}"
            );
        }
    }
}

/// `restart bot -v` used to print the 30-line lock script twice (90 lines): now each call is
/// one line, each script one line naming its size and sha256, no script text.
#[test]
fn restart_verbose_names_scripts_by_hash_in_a_few_lines() {
    let _lock = exclusive();
    let run = sandbox_ctops(["restart", "bot", "-v"]).run().expect(0);
    let stderr = run.stderr();
    let lines = stderr.lines().count();
    assert!(lines <= 20, "{lines} lines: {}", run.describe());
    for (name, line) in distinctive_lines() {
        assert!(
            !stderr.contains(&line),
            "the text of {name} at -v: {}",
            run.describe()
        );
    }
    let (names, count) = named_scripts(&stderr);
    assert!(
        names.iter().any(|n| n == "lock.sh") && names.iter().any(|n| n == "lock-keeper.sh"),
        "the lock's scripts named: {}",
        run.describe()
    );
    assert!(count >= 2, "{}", run.describe());
    assert_every_script_introduced(&stderr);
    assert!(
        stderr
            .lines()
            .filter(|l| l.contains("]$ "))
            .any(|l| l.contains("restart") && l.contains("bot")),
        "the compose call, with its arguments: {}",
        run.describe()
    );
    wait_healthy();
}

/// `rotate -vv` (runner, lock, keeper, SQL: the lock functions are in three of them) prints
/// the text of every host script it sends exactly once.
#[test]
fn rotate_very_verbose_prints_each_script_once() {
    let _lock = exclusive();
    reset_host();
    let run = sandbox_ctops(["rotate", "POSTGRES_PASSWORD", "--generate", "--yes", "-vv"])
        .run()
        .expect(0);
    let stderr = run.stderr();
    let (names, _) = named_scripts(&stderr);
    assert!(
        names.iter().filter(|n| *n == "lock-functions.sh").count() >= 2,
        "the lock functions sent in more than one script: {}",
        run.describe()
    );
    for expected in ["runner.sh", "runner-main.sh", "lock.sh"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not named: {}",
            run.describe()
        );
    }
    for (name, line) in distinctive_lines() {
        // Lines as the script has them (a runner's steps embed rendered commands indented,
        // as part of the runner's own text, printed once with it).
        let printed = stderr.lines().filter(|l| *l == line).count();
        let named = names.contains(&name);
        assert!(
            printed == usize::from(named),
            "{name}'s line {line:?} printed {printed} times: {}",
            run.describe()
        );
    }
    assert_every_script_introduced(&stderr);
    reset_host();
}

/// What a refused confirmation must leave as it was: the checkout's commit, the schema's
/// revision, the `.env` file's sha256.
fn host_state() -> (String, String, String) {
    let revision = host(&format!(
        "docker exec {} psql -U trader -d trader_psy -tAc 'SELECT version_num FROM alembic_version'",
        container("postgres")
    ));
    let env = host(&format!(
        "sha256sum '{CHECKOUT}/infrastructure/.env' | cut -d' ' -f1"
    ));
    (
        head_commit(),
        revision.trim().to_string(),
        env.trim().to_string(),
    )
}

/// Runs `args` in a pane, waits for its prompt, checks the plan above it, answers `no`.
fn refuse_at_the_prompt(args: &[&str], word: &str, plan: &[&str]) {
    let before = host_state();
    let pane = Pane::sandbox_ctops(args);
    let prompt = format!("type `{word}` to go on:");
    let screen = pane.wait_for("the confirmation", Duration::from_secs(60), |s| {
        s.contains(&prompt)
    });
    let above = &screen[..screen.find(&prompt).unwrap()];
    for expected in plan {
        assert!(
            above.contains(expected),
            "{args:?}: {expected:?} not shown above the prompt:\n{screen}"
        );
    }
    pane.type_line("no");
    assert_eq!(
        pane.wait_exit(Duration::from_secs(30)),
        4,
        "{}",
        pane.screen()
    );
    assert_eq!(
        host_state(),
        before,
        "{args:?}: the host changed after `no`"
    );
    assert!(!lock_held(), "{args:?}: the lock is left held");
}

/// `rollback`, `deploy` on a protected target and `rotate` show the plan at the real prompt (from → to with who deployed when, the schema's move, the backup, the
/// restarts); `no` changes nothing on the host.
#[test]
fn confirmations_show_the_plan_at_the_prompt() {
    let _lock = exclusive();
    reset_host();
    let run = sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "terminal test",
    ])
    .run()
    .expect(0);
    assert_no_spinner(&run);
    refuse_at_the_prompt(
        &["rollback"],
        "yes",
        &[
            "rollback sandbox (trader-psy-sandbox):",
            "from     v1.27.0, version 1.27.0",
            ", deployed 20",
            "to       ",
            "version 1.26.0",
            "schema   0003 → 0002: downgrade",
            "backup   backup db before the downgrade",
            "restart  compose up -d",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace("protected = false", "protected = true")
    });
    refuse_at_the_prompt(
        &[
            "--config",
            config.to_str().unwrap(),
            "deploy",
            "--ref",
            "v1.26.0",
            "--skip-preflight",
            "--reason",
            "terminal test",
        ],
        "sandbox",
        &[
            "deploy sandbox (trader-psy-sandbox):",
            "from     v1.27.0",
            "to       v1.26.0",
            "schema   0003 → 0002: downgrade",
        ],
    );
    refuse_at_the_prompt(
        &["rotate", "POSTGRES_PASSWORD", "--generate"],
        "yes",
        &[
            "rotate sandbox (trader-psy-sandbox):",
            "updates  POSTGRES_PASSWORD, DATABASE_URL",
            "role     PostgreSQL role trader",
            "restart  api, bot",
        ],
    );
}

/// `restore db` shows the backup, the database, the schema's move and the restarts at the
/// real prompt; `no` changes nothing.
#[test]
fn restore_confirmation_shows_the_plan_at_the_prompt() {
    let _lock = exclusive();
    reset_host();
    sandbox_ctops([
        "deploy",
        "--ref",
        "v1.27.0",
        "--skip-preflight",
        "--reason",
        "terminal test",
    ])
    .run()
    .expect(0);
    let backups = sandbox_ctops(["backup", "list", "--json"])
        .run()
        .expect(0)
        .json();
    let name = backups["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "db" && b["place"] == "host")
        .and_then(|b| b["name"].as_str())
        .expect("the pre-deploy backup")
        .to_string();
    refuse_at_the_prompt(
        &["restore", "db", &name, "--migrate"],
        "trader_psy",
        &[
            "restore db sandbox (trader-psy-sandbox):",
            &format!("from     {name}, taken "),
            "into     database `trader_psy`",
            "schema   0002 → 0003: upgrade",
            "restart  stops the writers",
        ],
    );
}

/// `restart` on a terminal: compose's lines scroll above a spinner with the elapsed time (held
/// after compose's last line by a test pause, long enough to look), cleared at the end with
/// compose's lines kept; through a pipe, the same lines and no spinner.
#[test]
fn streamed_compose_output_scrolls_above_a_spinner() {
    let _lock = exclusive();
    let pane = Pane::sandbox_ctops_with(
        &["restart", "bot"],
        &[("CTOPS_FAULT", "pause-after-stream")],
    );
    pane.wait_for(
        "compose's lines above a spinner",
        Duration::from_secs(60),
        |s| {
            let lines: Vec<&str> = s.lines().collect();
            let started = lines.iter().position(|l| l.contains("Started"));
            let spinner = lines.iter().rposition(|l| is_spinner_line(l));
            matches!((started, spinner), (Some(a), Some(b)) if a < b)
        },
    );
    let end = ends_cleared(&pane);
    assert!(end.contains("Started"), "compose's lines stay:\n{end}");

    let run = sandbox_ctops(["restart", "bot"])
        .env("CTOPS_FAULT", "pause-after-stream")
        .run()
        .expect(0);
    assert_no_spinner(&run);
    assert!(run.stderr().contains("Started"), "{}", run.describe());
    wait_healthy();
}

/// `backup db` on a terminal: while the host dumps (held a few seconds after its first 2 KiB by
/// a test pause), a counter of the bytes written so far with the throughput, asked of the host
/// through the same connection; cleared at the end. Through a pipe, none.
#[test]
fn a_dump_counts_its_bytes_on_a_terminal() {
    let _lock = exclusive();
    let pane = Pane::sandbox_ctops_with(&["backup", "db"], &[("CTOPS_FAULT", "pause-mid-stream")]);
    let screen = pane.wait_for(
        "the bytes dumped so far under the dump",
        Duration::from_secs(60),
        |s| {
            s.lines().any(|l| {
                is_spinner_line(l) && l.contains("dump") && l.contains("KiB at") && l.contains("/s")
            })
        },
    );
    assert!(
        screen.lines().any(|l| l.contains("2.00 KiB at")),
        "the 2 KiB written before the pause:\n{screen}"
    );
    ends_cleared(&pane);

    let run = sandbox_ctops(["backup", "db"])
        .env("CTOPS_FAULT", "pause-mid-stream")
        .run()
        .expect(0);
    assert_no_spinner(&run);
}

/// `backup minio` on a terminal: a counter of the bytes fetched with the throughput (held
/// before the snapshot is written by a test pause, long enough to look), cleared at the end.
#[test]
fn a_minio_snapshot_counts_the_bytes_it_fetches_on_a_terminal() {
    let _guard = shared();
    let dir = tempfile::tempdir().unwrap();
    // A local_dir of its own: nothing fetched before, so every body is fetched now.
    let config = variant_config(dir.path(), |t| t);
    let pane = Pane::run(
        &[env!("CARGO_BIN_EXE_ctops"), "backup", "minio"],
        &[
            ("CTOPS_CONFIG", config.to_string_lossy().into_owned()),
            ("CTOPS_FAULT", "pause-before-snapshot".into()),
        ],
    );
    let screen = pane.wait_for(
        "the bytes fetched, at the pause",
        Duration::from_secs(60),
        |s| {
            s.contains("paused at pause-before-snapshot")
                && s.lines()
                    .any(|l| is_spinner_line(l) && l.contains("fetch objects") && l.contains("/s"))
        },
    );
    assert!(
        !screen.lines().any(|l| l.contains("fetch objects 0 B")),
        "the bodies fetched are counted:\n{screen}"
    );
    ends_cleared(&pane);
}
