//! `incident snapshot` against the sandbox: every part is there, no secret value anywhere.

use crate::util::*;

#[test]
fn an_incident_snapshot_has_every_part_and_no_secret() {
    let _guard = shared();
    let env = std::fs::read_to_string(format!("{CHECKOUT}/infrastructure/.env")).unwrap();
    let secrets: Vec<String> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.to_string()))
        .filter(|v| v.len() >= 8)
        .collect();
    assert!(
        secrets.len() >= 3,
        "the sandbox .env has secrets: {}",
        secrets.len()
    );
    // A service that prints a secret into its log, as real ones do by accident.
    let password = env
        .lines()
        .find_map(|l| l.strip_prefix("POSTGRES_PASSWORD="))
        .unwrap()
        .to_string();
    host(&format!(
        "docker exec {} sh -c 'echo connecting with password {password} >> /proc/1/fd/1'",
        container("redis")
    ));
    let out = tempfile::tempdir().unwrap();
    let run = sandbox_ctops([
        "incident",
        "snapshot",
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ])
    .run()
    .expect(0);
    let doc = run.json();
    assert_schema("incident.json", &doc);
    let folder = std::path::PathBuf::from(doc["folder"].as_str().unwrap());
    for part in [
        "summary.txt",
        "ps.txt",
        "stats.txt",
        "df.txt",
        "free.txt",
        "oom.txt",
        "releases.jsonl",
        "audit.jsonl",
        "logs/api.log",
        "logs/bot.log",
        "logs/postgres.log",
        "logs/redis.log",
        "logs/minio.log",
    ] {
        assert!(folder.join(part).is_file(), "{part} missing: {doc:#}");
    }
    let read = |p: &str| std::fs::read_to_string(folder.join(p)).unwrap();
    assert!(read("ps.txt").contains("RESTARTS") && read("ps.txt").contains("OOM_KILLED"));
    assert!(read("df.txt").contains("Filesystem"));
    assert!(read("free.txt").contains("Mem"));
    assert!(read("logs/bot.log").contains("bot tick"));
    assert!(read("logs/redis.log").contains("connecting with password [masked:POSTGRES_PASSWORD]"));
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&folder.join("summary.txt")), 0o600);
    let all = host(&format!(
        "cat -- {}/*.txt {}/*.jsonl {}/logs/*",
        folder.display(),
        folder.display(),
        folder.display()
    ));
    for secret in &secrets {
        assert!(
            !all.contains(secret.as_str()),
            "a secret value is in the snapshot"
        );
        assert!(!run.stdout().contains(secret.as_str()) && !run.stderr().contains(secret.as_str()));
    }
}
