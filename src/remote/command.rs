//! A command to run on the host, kept as an argv until the moment it is sent.
//!
//! Every part is shell-quoted when rendered, so a value from the user or the config can
//! never become shell syntax. Where ctops needs shell features (a `cd`, a pipeline), the
//! shell text is a constant of ctops and the values travel as positional parameters.

use std::borrow::Cow;
use std::time::Duration;

/// Kills the command when the SSH channel goes away: sshd sends no SIGHUP without a PTY, so
/// a `logs -f` or `pg_dump` would otherwise run on after ctops is interrupted. The watcher
/// waits for EOF on stdin, which comes when ctops closes the channel or the link drops.
const STOP_ON_DISCONNECT: &str =
    r#""$@" </dev/null & p=$!; { cat >/dev/null; kill -TERM "$p"; } >/dev/null 2>&1 & wait "$p""#;

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

    pub fn stops_on_disconnect(&self) -> bool {
        self.stop_on_disconnect
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// A short name for messages: the program and its first words, unquoted.
    pub fn label(&self) -> String {
        let words: Vec<&str> = self
            .argv
            .iter()
            .filter(|w| !w.starts_with('-'))
            .take(3)
            .map(String::as_str)
            .collect();
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

/// Quotes a word for a POSIX shell when it needs it (`shell-escape`'s rules).
pub fn quote(word: &str) -> Cow<'_, str> {
    shell_escape::unix::escape(Cow::Borrowed(word))
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

    #[test]
    fn stop_on_disconnect_keeps_the_exit_status() {
        let c = RemoteCommand::new(["sh", "-c", "exit 7"]).stop_on_disconnect();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(c.render())
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(7));
    }

    #[test]
    fn label_names_the_program() {
        let c = RemoteCommand::new(["docker", "compose", "-f", "x.yml", "ps"]);
        assert_eq!(c.label(), "docker compose x.yml");
    }
}
