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

/// `health`, `status`, `backup list` and `releases` in a 140-column tmux pane, `TERM` set and
/// `NO_COLOR` unset: styled, and aligned on what the terminal shows.
#[test]
fn tables_line_up_on_a_terminal_with_colour() {
    let _lock = exclusive();
    reset_host();
    // A release history (found + deployed) and a pre-deploy backup, so every table has rows.
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
