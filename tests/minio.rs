//! `backup minio` and `restore minio` against real S3 servers on the sandbox host: moto
//! (listings paged at 1000 keys, a request log to count GETs) and s3s-fs (signature checks).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::util::*;

/// Keys a careless client mangles: doubled and trailing slashes, spaces, unicode, characters
/// that mean something in URLs.
const ODD_KEYS: [&str; 7] = [
    "a//b",
    "dir/",
    "voice note 1.ogg",
    "ünïcødé/файл.ogg",
    "q?x=1&y=2#frag",
    "plus+and%20",
    "/leading",
];

fn paging_endpoint() -> String {
    std::env::var("SANDBOX_PAGING_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:19001".into())
}

fn s3tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sandbox/s3tool.py")
}

/// Applies operations to the paging server directly (not through ctops).
fn apply(ops: &[Value]) {
    let mut child = Command::new("/usr/bin/python3")
        .arg(s3tool())
        .arg(paging_endpoint())
        .arg("apply")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for op in ops {
            writeln!(stdin, "{op}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "s3tool apply failed");
}

/// Every object of both buckets: key → sha256, content type, metadata.
fn dump(buckets: &[&str]) -> Value {
    let out = Command::new("/usr/bin/python3")
        .arg(s3tool())
        .arg(paging_endpoint())
        .arg("dump")
        .args(buckets)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn put(bucket: &str, key: &str, body: &str, content_type: &str) -> Value {
    json!({"op": "put", "bucket": bucket, "key": key, "body": body, "type": content_type,
           "meta": {"origin": "test", "key-length": key.len().to_string()}})
}

fn moto_log() -> String {
    std::fs::read_to_string(sandbox().join("moto.log")).unwrap_or_default()
}

/// Object GETs of our buckets (a listing is `GET /bucket/?list-type=2...` or `GET /bucket?...`).
fn object_gets(log: &str, buckets: &[&str]) -> usize {
    log.lines()
        .filter(|l| {
            buckets.iter().any(|b| {
                l.split(&format!("\"GET /{b}/"))
                    .nth(1)
                    .is_some_and(|rest| !rest.starts_with('?'))
            })
        })
        .count()
}

fn files_under(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().unwrap().is_dir() {
            count += files_under(&entry.path());
        } else {
            count += 1;
        }
    }
    count
}

/// Moves the newest snapshot `days` back in time, as if it had been taken then.
fn age_newest_snapshot(snapshots: &Path, days: u64) -> String {
    let mut names: Vec<String> = std::fs::read_dir(snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let newest = names.last().unwrap().clone();
    let mut doc: Value =
        serde_json::from_slice(&std::fs::read(snapshots.join(&newest)).unwrap()).unwrap();
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    let created = humantime_rfc3339(then);
    let name = format!("minio-{}", created.replace(['-', ':'], ""));
    doc["created"] = json!(created);
    doc["name"] = json!(name);
    std::fs::write(
        snapshots.join(format!("{name}.json")),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(snapshots.join(newest)).unwrap();
    created[..10].to_string()
}

fn humantime_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn snapshots_over_three_days_restore_exactly_and_unchanged_objects_are_not_fetched_again() {
    let _guard = shared();
    // Moto keeps buckets until reset-host: names of our own.
    let many = format!("ctops-many-{}", std::process::id());
    let odd = format!("ctops-odd-{}", std::process::id());
    let (many, odd) = (many.as_str(), odd.as_str());
    let dump = || dump(&[many, odd]);
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "endpoint = \"http://127.0.0.1:19000\"",
            &format!("endpoint = {:?}", paging_endpoint()),
        )
        .replace(
            "buckets = [\"voice-messages\", \"breathing-audio\"]",
            &format!("buckets = [{many:?}, {odd:?}]"),
        )
    });
    let run = |args: &[&str]| {
        ctops(args.iter().copied())
            .env("CTOPS_CONFIG", &config)
            .run()
    };
    let snapshots = dir.path().join("local-backups/minio/snapshots");
    let objects = dir.path().join("local-backups/minio/objects");

    // Day 1: more keys than one listing page, and the odd keys.
    let mut ops = vec![
        json!({"op": "bucket", "bucket": many}),
        json!({"op": "bucket", "bucket": odd}),
        json!({"op": "fill", "bucket": many, "prefix": "users/", "count": 1205}),
    ];
    for (n, key) in ODD_KEYS.iter().enumerate() {
        ops.push(put(odd, key, &format!("day 1 body {n}"), "audio/ogg"));
    }
    apply(&ops);
    run(&["backup", "minio"]).expect(0);
    let day1_state = dump();
    assert_eq!(day1_state[many].as_object().unwrap().len(), 1205);
    let day1 = age_newest_snapshot(&snapshots, 2);

    // Day 2: one added, one changed (bytes and type), one deleted.
    apply(&[
        put(odd, "added on day 2", "new", "text/plain"),
        put(odd, "a//b", "changed on day 2", "application/x-changed"),
        json!({"op": "delete", "bucket": odd, "key": "dir/"}),
        json!({"op": "delete", "bucket": many, "key": "users/00007"}),
    ]);
    run(&["backup", "minio"]).expect(0);
    let day2_state = dump();
    let day2 = age_newest_snapshot(&snapshots, 1);

    // Day 3 (today).
    apply(&[
        put(odd, "dir/", "back on day 3", "text/x-dir"),
        json!({"op": "delete", "bucket": odd, "key": "voice note 1.ogg"}),
    ]);
    let doc = run(&["backup", "minio", "--json"]).expect(0).json();
    assert_schema("backup.json", &doc);
    let day3_name = doc["backups"][0]["name"].as_str().unwrap().to_string();
    let day3_state = dump();
    assert_ne!(day1_state, day2_state);
    assert_ne!(day2_state, day3_state);

    // No changes: no object body fetched, no new stored file.
    let gets_before = object_gets(&moto_log(), &[many, odd]);
    let bodies_before = files_under(&objects);
    run(&["backup", "minio"]).expect(0);
    assert_eq!(
        object_gets(&moto_log(), &[many, odd]),
        gets_before,
        "an unchanged bucket was fetched again"
    );
    assert_eq!(files_under(&objects), bodies_before, "bodies stored again");

    // Without a TTY and without --yes: refused, nothing changed.
    run(&["restore", "minio", "--as-of", &day1]).expect(4);
    assert_eq!(dump(), day3_state);

    for (as_of, want) in [
        (day1.as_str(), &day1_state),
        (day2.as_str(), &day2_state),
        (day3_name.as_str(), &day3_state),
    ] {
        let r = run(&["restore", "minio", "--as-of", as_of, "--yes", "--json"]);
        assert_eq!(r.code(), 0, "{}", r.describe());
        assert_schema("restore-minio.json", &r.json());
        assert_eq!(&dump(), want, "state after restore --as-of {as_of}");
    }

    // The listing shows the snapshots; a failed listing is not a backup.
    let list = run(&["backup", "list", "--json"]).expect(0).json();
    let minio = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "minio" && b["place"] == "local")
        .count();
    assert!(minio >= 4, "{list}");
}

#[test]
fn backup_minio_signs_its_requests_for_a_store_that_checks_signatures() {
    let _guard = shared();
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| t);
    let r = ctops(["backup", "minio", "--json"])
        .env("CTOPS_CONFIG", &config)
        .run()
        .expect(0);
    let snapshot = &r.json()["backups"][0];
    let path = dir
        .path()
        .join("local-backups/minio/snapshots")
        .join(format!("{}.json", snapshot["name"].as_str().unwrap()));
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let voice = doc["buckets"]["voice-messages"].as_array().unwrap();
    let note = voice
        .iter()
        .find(|o| o["key"] == "users/3/note 2026-01-11.ogg")
        .expect("the key with a space");
    assert_eq!(note["content_type"], "audio/ogg");
    assert_eq!(note["metadata"]["user-id"], "3");
    assert_eq!(
        doc["buckets"]["breathing-audio"].as_array().unwrap().len(),
        2
    );

    // Wrong credentials: refused by the store, exit 1, and the secret is not in any output.
    let env = std::fs::read_to_string(format!("{CHECKOUT}/infrastructure/.env")).unwrap();
    let secret = env
        .lines()
        .find_map(|l| l.strip_prefix("MINIO_ROOT_PASSWORD="))
        .unwrap()
        .to_string();
    let wrong = variant_config(dir.path(), |t| {
        t.replace(
            "secret_key_var = \"MINIO_ROOT_PASSWORD\"",
            "secret_key_var = \"POSTGRES_PASSWORD\"",
        )
    });
    let r = ctops(["backup", "minio", "-vv"])
        .env("CTOPS_CONFIG", &wrong)
        .run();
    assert_eq!(r.code(), 1, "{}", r.describe());
    assert!(r.stderr().contains("object store"), "{}", r.describe());
    assert!(!r.stderr().contains(&secret) && !r.stdout().contains(&secret));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

#[test]
fn prune_while_a_minio_backup_runs_refuses_and_removes_nothing_it_fetched() {
    // backup prune also prunes the host's database backups: nothing else may run meanwhile.
    let _guard = exclusive();
    let bucket = format!("ctops-prune-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let config = variant_config(dir.path(), |t| {
        t.replace(
            "endpoint = \"http://127.0.0.1:19000\"",
            &format!("endpoint = {:?}", paging_endpoint()),
        )
        .replace(
            "buckets = [\"voice-messages\", \"breathing-audio\"]",
            &format!("buckets = [{bucket:?}]"),
        )
    });
    let run = |args: &[&str]| {
        ctops(args.iter().copied())
            .env("CTOPS_CONFIG", &config)
            .run()
    };
    let local = dir.path().join("local-backups/minio");
    let snapshots = local.join("snapshots");

    // An old snapshot (which prune removes, and with it every body no other one lists) and a
    // recent one.
    apply(&[
        json!({"op": "bucket", "bucket": bucket}),
        put(&bucket, "old", "in every snapshot", "audio/ogg"),
    ]);
    run(&["backup", "minio"]).expect(0);
    age_newest_snapshot(&snapshots, 40);
    run(&["backup", "minio"]).expect(0);

    // A backup that has fetched a new body and not yet written its snapshot.
    let new_body = "fetched while prune runs";
    apply(&[put(&bucket, "new", new_body, "audio/ogg")]);
    let (mut backup, _home) = ctops(["backup", "minio"])
        .env("CTOPS_CONFIG", &config)
        .env("CTOPS_FAULT", "pause-before-snapshot")
        .spawn();
    let stderr = backup.stderr.take().unwrap();
    let (paused_tx, paused) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("paused at pause-before-snapshot") {
                let _ = paused_tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let reached = paused.recv_timeout(std::time::Duration::from_secs(60));
    if reached.is_err() {
        let _ = backup.kill();
        let _ = backup.wait();
        panic!("backup minio never paused: {}", reader.join().unwrap());
    }
    let body = local
        .join("objects")
        .join(&sha256_hex(new_body.as_bytes())[..2])
        .join(sha256_hex(new_body.as_bytes()));
    assert!(body.is_file(), "the running backup has fetched the body");
    let before = files_under(&local.join("objects")) + files_under(&snapshots);

    let prune = run(&["backup", "prune", "--yes"]);
    assert_eq!(prune.code(), 4, "{}", prune.describe());
    assert!(
        prune.stderr().contains("backup minio (pid"),
        "the holder is named: {}",
        prune.describe()
    );
    assert!(
        body.is_file(),
        "prune removed a body the running backup fetched"
    );
    assert_eq!(
        files_under(&local.join("objects")) + files_under(&snapshots),
        before,
        "prune removed something"
    );

    let status = backup.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "backup minio: {status}: {stderr}");
    // The new snapshot is whole: every body it lists is here (checked by a dry-run restore).
    run(&["restore", "minio", "--dry-run"]).expect(0);
    // Afterwards prune goes ahead and keeps what the snapshots still list.
    run(&["backup", "prune", "--yes"]).expect(0);
    assert!(body.is_file());
    run(&["restore", "minio", "--dry-run"]).expect(0);
}
