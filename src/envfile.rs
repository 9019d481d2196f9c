//! Reading values out of a compose `.env` file (the subset compose itself reads: `KEY=VALUE`,
//! an optional `export `, single or double quotes, `#` comments; the last assignment wins).

/// The value of `key`, if the file assigns one.
pub fn value(text: &str, key: &str) -> Option<String> {
    text.lines().filter_map(assignment).fold(
        None,
        |found, (k, v)| {
            if k == key {
                Some(v)
            } else {
                found
            }
        },
    )
}

/// `(key, value)` of an assignment line; `None` for blank lines and comments.
pub fn assignment(line: &str) -> Option<(&str, String)> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").unwrap_or(line);
    let (key, raw) = line.split_once('=')?;
    Some((key.trim(), unquote(raw.trim())))
}

fn unquote(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('\'') {
        if let Some(end) = inner.find('\'') {
            return inner[..end].to_string();
        }
    }
    if let Some(inner) = raw.strip_prefix('"') {
        // Up to the first unescaped quote; \\, \" and \n are escapes (as compose reads them).
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return out,
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
    }
    // Unquoted: an inline comment starts at a `#` after whitespace.
    match raw.find(" #") {
        Some(at) => raw[..at].trim_end().to_string(),
        None => raw.to_string(),
    }
}

/// Linux's `MAX_ARG_STRLEN`: the longest string, its NUL included, that one argument or
/// environment entry of a new process may be (32 pages).
pub const MAX_ENV_STRING: usize = 128 * 1024;

/// A `.env` file as lines, so that changes keep comments, order and everything else as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    lines: Vec<String>,
}

impl EnvFile {
    pub fn parse(text: &str) -> Self {
        // Split at `\n` only: `lines()` would drop the `\r` of a CRLF file, and any change
        // would then rewrite every line ending in it.
        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines = if text.is_empty() {
            Vec::new()
        } else {
            body.split('\n').map(str::to_string).collect()
        };
        EnvFile { lines }
    }

    /// Every assignment in file order (a key assigned twice appears twice).
    pub fn entries(&self) -> Vec<(String, String)> {
        self.lines
            .iter()
            .filter_map(|l| assignment(l))
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// The value compose uses: the last assignment's.
    pub fn get(&self, key: &str) -> Option<String> {
        value(&self.render(), key)
    }

    /// Replaces the last assignment of `key` in place (keeping an `export `), or appends one.
    pub fn set(&mut self, key: &str, raw_value: &str) -> Result<(), String> {
        // `KEY=VALUE` and its NUL must fit the kernel's limit for one environment string, or
        // no service reading the file could start (execve fails with E2BIG).
        let size = key.len() + raw_value.len() + 2;
        if size > MAX_ENV_STRING {
            return Err(format!(
                "the value is {} bytes: Linux passes at most {} bytes per environment string (KEY=VALUE), so no service could start with it",
                raw_value.len(),
                MAX_ENV_STRING - key.len() - 2
            ));
        }
        let encoded = encode(raw_value)?;
        let last = self
            .lines
            .iter()
            .rposition(|l| assignment(l).is_some_and(|(k, _)| k == key));
        match last {
            Some(i) => {
                let export = if self.lines[i].trim_start().starts_with("export ") {
                    "export "
                } else {
                    ""
                };
                let cr = if self.lines[i].ends_with('\r') {
                    "\r"
                } else {
                    ""
                };
                self.lines[i] = format!("{export}{key}={encoded}{cr}");
            }
            None => self.lines.push(format!("{key}={encoded}")),
        }
        Ok(())
    }

    /// Removes every assignment of `key`; false when there was none.
    pub fn unset(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| assignment(l).is_none_or(|(k, _)| k != key));
        self.lines.len() != before
    }

    pub fn render(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }
}

/// A key compose accepts and a shell would too.
pub fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every line must be blank, a comment or `KEY=VALUE` with a valid key (`env edit` checks
/// the edited file before it goes anywhere).
pub fn validate(text: &str) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if line.contains('\0') {
            return Err(format!(
                "line {}: a NUL byte (no service can see it)",
                n + 1
            ));
        }
        match assignment(line) {
            Some((key, value)) if key.len() + value.len() + 2 > MAX_ENV_STRING => {
                return Err(format!(
                    "line {}: {key} is longer than the {MAX_ENV_STRING} bytes Linux passes per environment string",
                    n + 1
                ))
            }
            Some((key, _)) if valid_key(key) => {}
            Some((key, _)) => return Err(format!("line {}: invalid key {key:?}", n + 1)),
            None => return Err(format!("line {}: not KEY=VALUE", n + 1)),
        }
    }
    Ok(())
}

/// A value as written to the file: bare when that reads back the same, else single-quoted
/// (literal for compose), else double-quoted when it holds a `'` (and then no `$`, which
/// compose would interpolate there).
pub fn encode(value: &str) -> Result<String, String> {
    let bare = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+,=~^".contains(c));
    if value.contains('\n') || value.contains('\r') {
        return Err("a value cannot hold a line break".into());
    }
    // A process's environment is NUL-terminated strings: the services would see the value
    // cut at the NUL, not the value.
    if value.contains('\0') {
        return Err("a value cannot hold a NUL byte".into());
    }
    // compose reads `\'` and `\"` as a quote inside the value in either kind of quotes, so
    // a quoted value ending with a backslash never ends: the whole file would be unreadable.
    if value.ends_with('\\') && !bare {
        return Err(
            "a value cannot end with a backslash (compose would read past its closing quote)"
                .into(),
        );
    }
    if bare {
        Ok(value.to_string())
    } else if !value.contains('\'') {
        Ok(format!("'{value}'"))
    } else if !value.contains('$') {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        Ok(format!("\"{escaped}\""))
    } else {
        Err("a value cannot hold both ' and $ (compose would change it)".into())
    }
}

/// What a listing shows instead of a value.
pub fn mask(value: &str) -> String {
    if value.is_empty() {
        "(empty)".into()
    } else {
        format!("•••• ({} chars)", value.chars().count())
    }
}

/// Keys added, removed and changed from `old` to `new`, in key order.
pub fn diff(old: &EnvFile, new: &EnvFile) -> Vec<(String, &'static str)> {
    let map = |f: &EnvFile| -> std::collections::BTreeMap<String, String> {
        f.entries().into_iter().collect()
    };
    let (old, new) = (map(old), map(new));
    let mut changes = Vec::new();
    for key in old
        .keys()
        .chain(new.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (old.get(key), new.get(key)) {
            (None, Some(_)) => changes.push((key.clone(), "added")),
            (Some(_), None) => changes.push((key.clone(), "removed")),
            (Some(a), Some(b)) if a != b => changes.push((key.clone(), "changed")),
            _ => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_compose_reads() {
        let text = "# comment\nA=1\nexport B=two\nC=\"x y # z\"\nD='q'\nE=v # note\nA=last\n\n";
        assert_eq!(value(text, "A").as_deref(), Some("last"));
        assert_eq!(value(text, "B").as_deref(), Some("two"));
        assert_eq!(value(text, "C").as_deref(), Some("x y # z"));
        assert_eq!(value(text, "D").as_deref(), Some("q"));
        assert_eq!(value(text, "E").as_deref(), Some("v"));
        assert_eq!(value(text, "F"), None);
    }

    #[test]
    fn set_and_unset_keep_comments_order_and_export() {
        let mut f = EnvFile::parse("# top\nexport A=1\nB=2\n# mid\nC=3\n");
        f.set("A", "new value").unwrap();
        f.set("D", "x\"y'z").unwrap();
        assert!(f.set("E", "it's $HOME").is_err());
        assert!(f.unset("B"));
        assert!(!f.unset("B"));
        assert_eq!(
            f.render(),
            "# top\nexport A='new value'\n# mid\nC=3\nD=\"x\\\"y'z\"\n"
        );
        assert_eq!(f.get("D").as_deref(), Some("x\"y'z"));
        assert_eq!(f.get("A").as_deref(), Some("new value"));
        assert_eq!(f.get("C").as_deref(), Some("3"));
    }

    #[test]
    fn encoded_values_read_back_the_same() {
        for v in [
            "plain",
            "with space",
            "a#b",
            "postgres://u:p@h:5432/db",
            "",
            "it's",
            "a\"b$c",
            "x\\y",
        ] {
            let mut f = EnvFile::parse("");
            f.set("K", v).unwrap();
            assert_eq!(f.get("K").as_deref(), Some(v), "{v:?} as {}", f.render());
        }
    }

    /// Found by `properties::a_file_renders_as_it_was_read` (`"\r\n"`).
    #[test]
    fn a_crlf_env_file_keeps_its_line_endings_through_a_change() {
        let mut f = EnvFile::parse("# top\r\nA=1\r\nB=2\r\n");
        f.set("A", "3").unwrap();
        assert_eq!(f.render(), "# top\r\nA=3\r\nB=2\r\n");
        assert_eq!(f.get("B").as_deref(), Some("2"));
        assert_eq!(EnvFile::parse("\r\n").render(), "\r\n");
    }

    /// Found by `properties::an_accepted_value_reads_back_byte_for_byte`: a NUL was written
    /// single-quoted, and every service would have seen the value cut at it.
    #[test]
    fn a_value_with_a_nul_byte_is_refused() {
        let err = EnvFile::parse("").set("K", "a\0b").unwrap_err();
        assert!(err.contains("NUL"), "{err}");
        assert!(validate("A=x\0y\n").unwrap_err().contains("line 1"));
    }

    /// Found by `sampled_env_values_read_back_through_docker_compose_config` (`bw\`): written
    /// as `'bw\'`, which compose reads as an unterminated quote, failing the whole file.
    #[test]
    fn a_value_ending_with_a_backslash_is_refused() {
        let mut f = EnvFile::parse("");
        for v in ["bw\\", "a b\\", "it's\\", "\\"] {
            let err = f.set("K", v).unwrap_err();
            assert!(err.contains("backslash"), "{v:?}: {err}");
        }
        f.set("K", "a\\b").unwrap();
        assert_eq!(f.render(), "K='a\\b'\n");
    }

    /// Found with the corpus (1 MiB through `rotate --from-stdin`): it was written, and every
    /// service recreated with it failed to start (E2BIG), to be undone after a health gate.
    #[test]
    fn a_value_no_process_could_start_with_is_refused() {
        let mut f = EnvFile::parse("");
        let fits = "x".repeat(MAX_ENV_STRING - 3);
        f.set("K", &fits).unwrap();
        let err = f.set("K", &format!("{fits}x")).unwrap_err();
        assert!(err.contains("at most 131069 bytes"), "{err}");
        assert!(f.set("K", &"y".repeat(1 << 20)).is_err());
        assert!(validate(&format!("K={}\n", "y".repeat(1 << 20))).is_err());
        assert_eq!(f.get("K").map(|v| v.len()), Some(MAX_ENV_STRING - 3));
    }

    #[test]
    fn diff_names_keys_only() {
        let old = EnvFile::parse("A=1\nB=2\nC=3\n");
        let new = EnvFile::parse("A=1\nB=9\nD=4\n");
        assert_eq!(
            diff(&old, &new),
            [
                ("B".to_string(), "changed"),
                ("C".to_string(), "removed"),
                ("D".to_string(), "added")
            ]
        );
        assert!(validate("# c\n\nA=1\n").is_ok());
        assert!(validate("A=1\nnot an assignment\n").is_err());
        assert!(validate("1A=1\n").is_err());
        assert_eq!(mask("secret"), "•••• (6 chars)");
    }
}

/// Property tests: whatever `encode` accepts reads back byte for byte, and a file's other
/// lines survive a change untouched. Failing cases proptest found are kept in
/// `proptest-regressions/envfile.txt` and as named tests above.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Values as hostile as a `.env` line can carry: quotes, `$`, backslashes, `#`,
    /// whitespace at either end, control characters, non-ASCII.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof!["[ -~]{0,40}", "[a-z'\"$\\\\# =`\t]{0,20}", any::<String>(),]
    }

    fn key() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_]{0,12}"
    }

    /// A `.env` text: comments, blank lines, assignments in every form the reader takes.
    fn file_text() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            "#[ -~]{0,20}",
            Just(String::new()),
            (key(), "[ -~]{0,20}").prop_map(|(k, v)| format!("{k}={v}")),
            (key(), "[ -~]{0,20}").prop_map(|(k, v)| format!("export {k}={v}")),
            (key(), "[^'\n]{0,10}").prop_map(|(k, v)| format!("{k}='{v}'")),
            "[^\n]{0,30}",
        ];
        proptest::collection::vec(line, 0..8).prop_map(|lines| {
            let mut text = lines.join("\n");
            text.push('\n');
            text
        })
    }

    proptest! {
        #[test]
        fn an_accepted_value_reads_back_byte_for_byte(text in file_text(), k in key(), v in value()) {
            let mut file = EnvFile::parse(&text);
            match file.set(&k, &v) {
                Ok(()) => {
                    prop_assert_eq!(file.get(&k), Some(v.clone()), "{}", file.render());
                    // And again after the file is written and read back.
                    let again = EnvFile::parse(&file.render());
                    prop_assert_eq!(again.get(&k), Some(v.clone()));
                }
                // Refused only for what compose cannot carry as it is.
                Err(_) => prop_assert!(
                    v.contains(['\n', '\r', '\0']) || (v.contains('\'') && v.contains('$'))
                        || v.ends_with('\\')
                        || v.len() + k.len() + 2 > MAX_ENV_STRING,
                    "{v:?} refused"
                ),
            }
            // ... and that is always refused: never written as something else.
            if v.contains(['\n', '\r', '\0']) || (v.contains('\'') && v.contains('$')) {
                prop_assert!(EnvFile::parse("").set(&k, &v).is_err(), "{v:?} accepted");
            }
        }

        #[test]
        fn setting_a_key_leaves_every_other_key_as_it_was(text in file_text(), k in key(), v in value()) {
            let before = EnvFile::parse(&text);
            let mut after = before.clone();
            if after.set(&k, &v).is_ok() {
                for (other, _) in before.entries() {
                    if other != k {
                        prop_assert_eq!(after.get(&other), before.get(&other), "{}", other);
                    }
                }
            }
        }

        #[test]
        fn a_file_renders_as_it_was_read(text in file_text()) {
            prop_assert_eq!(EnvFile::parse(&text).render(), text);
        }

        #[test]
        fn the_reader_never_panics(text in any::<String>(), k in key()) {
            let file = EnvFile::parse(&text);
            let _ = file.get(&k);
            let _ = file.entries();
            let _ = validate(&text);
        }
    }
}
