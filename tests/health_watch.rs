//! `health --watch` on a real terminal (a pane of a private tmux server): one screen redrawn
//! in place, and the terminal given back as it was (`stty -g` and the primary screen) after
//! Ctrl-C typed as a key, after `q` and after SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// A tmux server of our own (its socket in a temporary folder: nobody else's tmux is seen or
/// touched) with one 140x30 pane running a script; killed on drop.
struct Pane {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Pane {
    fn start(script: &str) -> Pane {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        std::fs::write(dir.path().join("pane.sh"), script).unwrap();
        let pane = Pane { dir, socket };
        let out = pane
            .tmux()
            .args(["new-session", "-d", "-x", "140", "-y", "30", "bash"])
            .arg(pane.dir.path().join("pane.sh"))
            .output()
            .expect("tmux (tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pane
    }

    fn tmux(&self) -> Command {
        let mut tmux = Command::new("tmux");
        tmux.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("TERM", "xterm-256color")
            .arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket);
        tmux
    }

    /// The visible screen, one string per row (trailing blanks trimmed by tmux).
    fn capture(&self) -> Vec<String> {
        let out = self.tmux().args(["capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn keys(&self, keys: &str) {
        let status = self.tmux().args(["send-keys", keys]).status().unwrap();
        assert!(status.success());
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits until `what` holds of the screen, returning that screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what}; screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

fn wait_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The round number in the title line, if the screen shows one.
fn round_of(screen: &[String]) -> Option<u64> {
    let title = screen.first()?;
    let rest = title.split(" · round ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

enum End {
    CtrlC,
    Q,
    Sigterm,
}

/// Writes the primary screen and the terminal's settings, waits for `go`, runs the watch
/// (its pid in `pid`), then records its exit code and the settings again, silently.
fn watch_then(end: End) {
    let _lock = shared();
    let script = format!(
        "export HOME=\"$(dirname \"$0\")\" CTOPS_CONFIG={config:?} PATH={path:?}\n\
         cd \"$HOME\"\n\
         printf 'primary marker line\\n'\n\
         stty -g > before\n\
         while [ ! -e go ]; do sleep 0.05; done\n\
         bash -c 'echo $$ > pid; exec \"$0\" health --watch 1s' {bin:?}\n\
         echo $? > code\n\
         stty -g > after\n\
         sleep 600\n",
        config = sandbox_config().display().to_string(),
        path = std::env::var("PATH").unwrap_or_default(),
        bin = env!("CARGO_BIN_EXE_ctops"),
    );
    let pane = Pane::start(&script);
    let stty_before = wait_file(&pane.file("before"));
    let primary = pane.wait_for("primary marker", |s| {
        s.iter().any(|l| l == "primary marker line")
    });
    std::fs::write(pane.file("go"), "").unwrap();

    let first = pane.wait_for("a second round", |s| round_of(s).is_some_and(|r| r >= 2));
    let round = round_of(&first).unwrap();
    let second = pane.wait_for("the next round", |s| round_of(s).is_some_and(|r| r > round));
    let screens = format!("{}\n-----\n{}", first.join("\n"), second.join("\n"));
    assert_eq!(first.len(), second.len(), "{screens}");
    let row_of = |screen: &[String], start: &str| {
        screen
            .iter()
            .position(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?}: {screens}"))
    };
    for start in ["CHECK ", "api ", "postgres ", "redis ", "service api "] {
        assert_eq!(row_of(&first, start), row_of(&second, start), "{screens}");
    }
    assert_ne!(first, second, "nothing changed in a round: {screens}");
    assert_eq!(
        second.iter().filter(|l| l.starts_with("CHECK ")).count(),
        1,
        "one table, not one per round: {screens}"
    );
    assert!(
        second
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .unwrap()
            .starts_with("up: all "),
        "the summary on the last line: {screens}"
    );
    assert!(
        !second.iter().any(|l| l == "primary marker line"),
        "the watch is not on the alternate screen: {screens}"
    );

    match end {
        End::CtrlC => pane.keys("C-c"),
        End::Q => pane.keys("q"),
        End::Sigterm => {
            let pid = wait_file(&pane.file("pid"));
            host(&format!("kill -TERM {}", pid.trim()));
        }
    }
    let stty_after = wait_file(&pane.file("after"));
    let code = std::fs::read_to_string(pane.file("code")).unwrap();
    assert_eq!(code.trim(), "0");
    assert_eq!(
        stty_after, stty_before,
        "the terminal's settings were not restored"
    );
    let back = pane.capture();
    assert_eq!(
        back, primary,
        "the primary screen was not given back as it was"
    );
}

#[test]
fn watch_on_a_terminal_redraws_one_screen_and_ctrl_c_gives_the_terminal_back() {
    watch_then(End::CtrlC);
}

#[test]
fn watch_on_a_terminal_ends_on_q_and_gives_the_terminal_back() {
    watch_then(End::Q);
}

#[test]
fn watch_on_a_terminal_ends_on_sigterm_and_gives_the_terminal_back() {
    watch_then(End::Sigterm);
}
