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
    for quote in ['"', '\''] {
        if let Some(inner) = raw.strip_prefix(quote) {
            if let Some(end) = inner.find(quote) {
                return inner[..end].to_string();
            }
        }
    }
    // Unquoted: an inline comment starts at a `#` after whitespace.
    match raw.find(" #") {
        Some(at) => raw[..at].trim_end().to_string(),
        None => raw.to_string(),
    }
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
}
