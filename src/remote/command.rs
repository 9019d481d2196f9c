//! A command to run on the host, kept as an argv until the moment it is sent.
//!
//! Every part is shell-quoted when rendered, so a value from the user or the config can
//! never become shell syntax. Where ctops needs shell features (a `cd`, a pipeline), the
//! shell text is a constant of ctops and the values travel as positional parameters.

use std::borrow::Cow;
use std::time::Duration;

/// Kills the command when the SSH channel goes away: sshd sends no SIGHUP without a PTY, so
/// a `logs -f` or `pg_dump` would otherwise run on after ctops is interrupted. The watcher
/// waits for EOF on the channel's stdin (kept as fd 3: a background job's own stdin is
/// /dev/null), which comes when ctops closes the channel or the link drops. `setsid` gives the
/// command a process group of its own, so its children (a compose plugin, say) stop with it.
const STOP_ON_DISCONNECT: &str = r#"exec 3<&0; setsid "$@" </dev/null 3<&- & p=$!; { cat <&3 >/dev/null; kill -TERM -"$p"; } >/dev/null 2>&1 & exec 3<&-; wait "$p""#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    argv: Vec<String>,
    cwd: Option<String>,
    stop_on_disconnect: bool,
    /// Overrides the target's `timeouts.command`.
    pub timeout: Option<Duration>,
    /// A command that changes nothing on the host (allowed under `--dry-run`).
    pub read_only: bool,
}

impl RemoteCommand {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RemoteCommand {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            stop_on_disconnect: false,
            timeout: None,
            read_only: false,
        }
    }

    /// `sh -c SCRIPT ctops ARGS...`: the script is ctops's own text, the values are `$1...`.
    pub fn sh<I, S>(script: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = vec!["sh".to_string(), "-c".into(), script.into(), "ctops".into()];
        argv.extend(args.into_iter().map(Into::into));
        Self::new(argv)
    }

    pub fn in_dir(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// For commands that stream or may hang: stop them when the channel closes.
    pub fn stop_on_disconnect(mut self) -> Self {
        self.stop_on_disconnect = true;
        self
    }

    /// Runs the command under `prefix` (`timeout 300 ...`), in the same folder.
    pub fn wrapped(mut self, prefix: &[String]) -> Self {
        let mut argv = prefix.to_vec();
        argv.append(&mut self.argv);
        self.argv = argv;
        self
    }

    /// The same command without the watcher (for the detached runner, which has no channel).
    pub fn without_watcher(mut self) -> Self {
        self.stop_on_disconnect = false;
        self
    }

    pub fn stops_on_disconnect(&self) -> bool {
        self.stop_on_disconnect
    }

    /// A short name for messages: the program and its first words, unquoted. A script sent
    /// as `sh -c SCRIPT` is named by the start of its sha256 (as `-v` names it), never
    /// printed: a message shows the step and the script's stderr, not 30 lines of shell.
    pub fn label(&self) -> String {
        // The lock's pid-registering wrapper (`sh -c SCRIPT ctops-lock-run D TOKEN CMD...`)
        // is not what runs: name the command it wraps.
        let skip = match self.argv.as_slice() {
            [sh, c, _, name, ..]
                if sh == "sh" && c == "-c" && name == crate::lock::LOCK_RUN_NAME =>
            {
                6
            }
            _ => 0,
        };
        let argv = &self.argv[skip.min(self.argv.len())..];
        let mut words: Vec<String> = Vec::new();
        let mut i = 0;
        while i < argv.len() && words.len() < 3 {
            let word = &argv[i];
            if word == "sh" && argv.get(i + 1).is_some_and(|w| w == "-c") {
                let script = argv.get(i + 2).map(String::as_str).unwrap_or_default();
                words.push(format!("sh script:{}", script_id(script)));
                // $0 and the values after the script are the script's, not more words.
                break;
            }
            if !word.starts_with('-') {
                words.push(one_line_word(word));
            }
            i += 1;
        }
        words.join(" ")
    }

    /// The exact text sent to the host's shell.
    pub fn render(&self) -> String {
        let command = join_quoted(&self.argv);
        let command = if self.stop_on_disconnect {
            format!("sh -c {} ctops {command}", quote(STOP_ON_DISCONNECT))
        } else {
            command
        };
        match &self.cwd {
            Some(dir) => format!("cd {} && {command}", quote(dir)),
            None => command,
        }
    }
}

/// The first 12 hex digits of a script's sha256: how messages and `-v` name it.
pub fn script_id(script: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(script.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A word for a one-line message: a word with a newline (shell text) or a very long one is
/// cut, so that no message carries a script body.
fn one_line_word(word: &str) -> String {
    let first = word.lines().next().unwrap_or_default();
    if first.len() == word.len() && word.chars().count() <= 80 {
        return word.to_string();
    }
    let cut: String = first.chars().take(40).collect();
    format!("{cut}...")
}

/// Quotes a word for a POSIX shell when it needs it (`shell-escape`'s rules).
pub fn quote(word: &str) -> Cow<'_, str> {
    shell_escape::unix::escape(Cow::Borrowed(word))
}

/// `NAME='value'`: the one way a value becomes a shell variable in a rendered script (the
/// host scripts under `src/scripts/` read their values from such lines or from `$1...`).
pub fn assign(name: &str, value: &str) -> String {
    debug_assert!(name
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
    format!("{name}={}", quote(value))
}

pub fn join_quoted(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_readable() {
        let c = RemoteCommand::new([
            "docker",
            "compose",
            "-f",
            "infrastructure/docker-compose.yml",
            "ps",
        ]);
        assert_eq!(
            c.render(),
            "docker compose -f infrastructure/docker-compose.yml ps"
        );
    }

    #[test]
    fn hostile_words_are_quoted_whole() {
        let c = RemoteCommand::new([
            "echo",
            "$(touch /tmp/x)",
            "a b",
            "it's",
            "`id`",
            "x;y",
            "",
            "a\nb",
        ])
        .in_dir("/srv/ctops sandbox/it's");
        assert_eq!(
            c.render(),
            "cd '/srv/ctops sandbox/it'\\''s' && echo '$(touch /tmp/x)' 'a b' 'it'\\''s' '`id`' 'x;y' '' 'a\nb'"
        );
    }

    #[test]
    fn quoting_round_trips_through_a_real_shell() {
        let words = [
            "$(id)", "a b", "it's", "`x`", "\\", "\"q\"", "*", "~", "a\nb", "é ü",
        ];
        let c = RemoteCommand::new(
            std::iter::once("printf")
                .chain(std::iter::once("%s\\0"))
                .chain(words),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(c.render())
            .output()
            .unwrap();
        let got: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(got, words);
    }

    fn spawn_watched(script: &str) -> std::process::Child {
        let c = RemoteCommand::new(["sh", "-c", script]).stop_on_disconnect();
        std::process::Command::new("sh")
            .arg("-c")
            .arg(c.render())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn stop_on_disconnect_keeps_the_exit_status_while_the_channel_is_open() {
        let mut child = spawn_watched("sleep 0.3; exit 7");
        let _channel_stdin = child.stdin.take();
        assert_eq!(child.wait().unwrap().code(), Some(7));
    }

    #[test]
    fn stop_on_disconnect_stops_the_command_when_the_channel_closes() {
        // Durations no other test (or process) uses, so that pgrep finds only ours.
        let mut child = spawn_watched("sleep 30.7171 & sleep 31.7171; exit 0");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let started = std::time::Instant::now();
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(status.code(), Some(143));
        let survivors = || {
            std::process::Command::new("pgrep")
                .args(["-fx", "sleep 3[01].7171"])
                .output()
                .unwrap()
                .stdout
        };
        for _ in 0..20 {
            if survivors().is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "children of the command survived: {}",
            String::from_utf8_lossy(&survivors())
        );
    }

    #[test]
    fn a_script_sent_as_a_body_is_named_by_its_hash_never_printed() {
        let script = "set -u\nD=$1\nmkdir -p \"$D\"\n# thirty lines of shell\nexit 77";
        let c = RemoteCommand::sh(script, ["/var/lib/ctops", "acquire"]);
        let label = c.label();
        assert_eq!(label, format!("sh script:{}", script_id(script)));
        assert!(!label.contains('\n') && !label.contains("mkdir"), "{label}");
        let wrapped = c.wrapped(&["sudo".into(), "-n".into()]);
        assert_eq!(
            wrapped.label(),
            format!("sudo sh script:{}", script_id(script))
        );
        let odd = RemoteCommand::new(["printf", "a\nb\nc"]);
        assert!(!odd.label().contains('\n'), "{}", odd.label());
    }

    #[test]
    fn label_names_the_program() {
        let c = RemoteCommand::new(["docker", "compose", "-f", "x.yml", "ps"]);
        assert_eq!(c.label(), "docker compose x.yml");
    }
}
