//! `access` against the sandbox sshd's real `authorized_keys`.

use crate::util::*;

const AUTHORIZED: &str = "/home/deploy/.ssh/authorized_keys";

fn authorized() -> String {
    std::fs::read_to_string(AUTHORIZED).unwrap()
}

fn mode() -> String {
    host(&format!("stat -c '%a %U' {AUTHORIZED}"))
        .trim()
        .to_string()
}

#[test]
fn keys_are_added_once_the_one_in_use_and_the_last_are_never_removed() {
    let _guard = exclusive();
    reset_host();
    let before = authorized();
    let ours = std::fs::read_to_string(sandbox().join("id_ed25519.pub")).unwrap();
    let ours_fp = host(&format!(
        "ssh-keygen -lf {}",
        sandbox().join("id_ed25519.pub").display()
    ));
    let ours_fp = ours_fp.split_whitespace().nth(1).unwrap().to_string();

    // The key in use (and the last one): refused, file unchanged.
    let run = sandbox_ctops(["access", "remove", &ours_fp, "--yes"])
        .run()
        .expect(4);
    assert!(run.stderr().contains("logs in with"), "{}", run.describe());
    assert_eq!(authorized(), before);

    // A second key, added twice: present once; mode kept; a new login still works.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    host(&format!(
        "ssh-keygen -q -t ed25519 -N '' -C 'colleague@laptop' -f {}",
        other.display()
    ));
    let pubkey = format!("{}.pub", other.display());
    sandbox_ctops(["access", "add", &pubkey]).run().expect(0);
    let run = sandbox_ctops(["access", "add", &pubkey, "--json"])
        .run()
        .expect(0);
    assert_schema("access-change.json", &run.json());
    assert_eq!(run.json()["changed"], false);
    assert!(
        run.stderr().contains("already authorized"),
        "{}",
        run.describe()
    );
    assert_eq!(authorized().matches("colleague@laptop").count(), 1);
    assert_eq!(mode(), "600 deploy");
    let list = sandbox_ctops(["access", "list", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("access-list.json", &list);
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list:#}");
    assert!(keys.iter().any(|k| k["fingerprint"] == ours_fp.as_str()));
    // The colleague's key logs in for real.
    let cfg = sandbox().join("ssh_config");
    assert!(host_ok(&format!(
        "ssh -F {} -o IdentityFile={} trader-psy-sandbox true",
        cfg.display(),
        other.display()
    )));

    // Removing without --yes and no TTY: refused; with --yes by comment: gone, ours stays.
    sandbox_ctops(["access", "remove", "colleague@laptop"])
        .run()
        .expect(4);
    assert_eq!(authorized().matches("colleague@laptop").count(), 1);
    let removed = sandbox_ctops(["access", "remove", "colleague@laptop", "--yes", "--json"])
        .run()
        .expect(0)
        .json();
    assert_schema("access-change.json", &removed);
    assert_eq!(removed["changed"], true);
    assert_eq!(authorized(), before.clone());
    assert_eq!(mode(), "600 deploy");
    assert!(authorized().contains(ours.split_whitespace().nth(1).unwrap()));

    // Not a key: refused before anything changes.
    std::fs::write(
        dir.path().join("junk.pub"),
        "ssh-ed25519 bm90IGEga2V5 junk\n",
    )
    .unwrap();
    sandbox_ctops([
        "access",
        "add",
        dir.path().join("junk.pub").to_str().unwrap(),
    ])
    .run()
    .expect(2);
    assert_eq!(authorized(), before);
}
