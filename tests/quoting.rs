//! Hostile values: what must pass through arrives byte for byte; what is invalid is refused
//! with exit 2; in no case does a payload run.

use crate::util::*;

const PAYLOAD_FILE: &str = "/tmp/ctops-pwned";

#[test]
fn hostile_service_names_are_refused_before_connecting() {
    // Exclusive: it counts connections at the sshd.
    let _lock = exclusive();
    let _ = std::fs::remove_file(PAYLOAD_FILE);
    let before = ssh_connections();
    for name in [
        "$(touch /tmp/ctops-pwned)",
        "api;touch /tmp/ctops-pwned",
        "`touch /tmp/ctops-pwned`",
        "bot\ntouch /tmp/ctops-pwned",
        "-f",
    ] {
        let run = sandbox_ctops(["logs", "--", name]).run().expect(2);
        assert!(
            run.stderr().contains("invalid service name"),
            "{}",
            run.describe()
        );
    }
    assert!(
        !std::path::Path::new(PAYLOAD_FILE).exists(),
        "the payload ran"
    );
    assert_eq!(
        ssh_connections(),
        before,
        "an invalid argument must be refused before connecting"
    );
}

#[test]
fn hostile_values_in_a_check_command_arrive_byte_for_byte() {
    let _lock = shared();
    let value = r#"a b'c"d $(touch /tmp/ctops-pwned) `touch /tmp/ctops-pwned`; | & \ é"#;
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |text| {
        let check = format!(
            "hostile = {{ service = \"redis\", command = [\"printf\", \"%s\", {v}], expect = {v} }}\n",
            v = toml_string(value)
        );
        text.replace("[checks]\n", &format!("[checks]\n{check}"))
    });
    let run = ctops(["--config", config.to_str().unwrap(), "health", "--json"]).run();
    let doc = run.json();
    let row = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hostile")
        .expect("hostile row")
        .clone();
    assert_eq!(row["ok"], true, "{}", run.describe());
    assert_eq!(row["detail"], value, "{}", run.describe());
    assert!(
        !host_ok(&format!(
            "docker exec {} test -e {PAYLOAD_FILE}",
            container("redis")
        )),
        "the payload ran in the container"
    );
    assert!(
        !std::path::Path::new(PAYLOAD_FILE).exists(),
        "the payload ran on the host"
    );
}

#[test]
fn a_checkout_path_with_spaces_and_quotes_is_used_as_is() {
    let _lock = shared();
    let odd = "/srv/ctops sandbox/it's a \"checkout\"";
    host(&format!("ln -sfn {:?} {}", CHECKOUT, shell_quote(odd)));
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |text| {
        text.replace(
            &format!("dir = {CHECKOUT:?}"),
            &format!("dir = {}", toml_string(odd)),
        )
    });
    let run = ctops([
        "--config",
        config.to_str().unwrap(),
        "status",
        "--json",
        "-v",
    ])
    .run()
    .expect(0);
    let commit = host(&format!(
        "git -c safe.directory='*' -C {} rev-parse HEAD",
        shell_quote(CHECKOUT)
    ));
    assert_eq!(
        run.json()["checkout"]["commit"],
        commit.trim(),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr()
            .contains(r#"'/srv/ctops sandbox/it'\''s a "checkout"'"#),
        "-v shows the quoted path: {}",
        run.describe()
    );
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
