//! Runbook 8.2, `access`: the SSH keys that may log in to the host.
//!
//! The runbook appends with `echo '...' >> ~/.ssh/authorized_keys`, which duplicates keys,
//! accepts anything, and offers no way back. ctops validates the key, adds it once, writes
//! the file atomically with its mode kept, refuses to remove the key it logs in with or the
//! last key, and after any change proves that a *new* connection still logs in before it
//! reports success (else it puts the old file back).

use std::collections::BTreeSet;

use anyhow::Result;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Envelope;
use crate::cli::AccessCommand;
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::lock;
use crate::remote::RemoteCommand;

const KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// `~/.ssh/authorized_keys` of the login user, and nothing when it does not exist yet.
const READ: &str = r#"f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] && cat "$f"; true"#;

/// New contents on stdin: written beside the file, mode kept (0600 for a new file), renamed
/// over it; the previous file kept as `.ctops-before` until the new login is proven. `$1` is
/// the sha256 of the file the new contents were made from: if it changed since (another
/// operator's edit), nothing is written (exit 75).
const WRITE: &str = r#"set -e
d="$HOME/.ssh"; f="$d/authorized_keys"
umask 077; mkdir -p "$d"
now=$(cat "$f" 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$now" = "$1" ] || { echo "authorized_keys changed since it was read" >&2; exit 75; }
cat > "$f.ctops-new"
if [ -f "$f" ]; then chmod --reference="$f" "$f.ctops-new"; cp -p "$f" "$f.ctops-before"; else chmod 0600 "$f.ctops-new"; fi
mv -f "$f.ctops-new" "$f""#;
const PUT_BACK: &str =
    r#"f="$HOME/.ssh/authorized_keys"; [ -f "$f.ctops-before" ] && mv -f "$f.ctops-before" "$f""#;
const DROP_BACKUP: &str = r#"rm -f "$HOME/.ssh/authorized_keys.ctops-before""#;

/// One key of an `authorized_keys` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Key {
    #[serde(rename = "type")]
    pub kind: String,
    pub fingerprint: String,
    pub comment: String,
    #[serde(skip)]
    pub blob: Vec<u8>,
}

/// Parses a key line (`[options] type base64 [comment]`), checking the blob names its type.
pub fn parse_key(line: &str) -> Option<Key> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| KEY_TYPES.contains(w))?;
    let kind = words[at];
    let blob = STANDARD.decode(words.get(at + 1)?).ok()?;
    let named = blob.get(4..4 + u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize)?;
    if named != kind.as_bytes() {
        return None;
    }
    Some(Key {
        kind: kind.to_string(),
        fingerprint: format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob))),
        comment: words[at + 2..].join(" "),
        blob,
    })
}

pub async fn run(ctx: &Ctx, command: &AccessCommand) -> Result<Exit> {
    match command {
        AccessCommand::List => list(ctx).await,
        AccessCommand::Add { pubkey_file } => {
            let text = std::fs::read_to_string(pubkey_file)
                .map_err(|e| Error::usage(format!("cannot read {}: {e}", pubkey_file.display())))?;
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let key = parse_key(line).ok_or_else(|| {
                Error::usage(format!(
                    "{} does not hold an OpenSSH public key (type base64 comment)",
                    pubkey_file.display()
                ))
            })?;
            add(ctx, line, &key).await
        }
        AccessCommand::Remove { key } => remove(ctx, key).await,
    }
}

/// The file as it is now (empty when there is none).
async fn read(ctx: &Ctx) -> Result<Read, Error> {
    let remote = ctx.remote().await?;
    let out = super::run_step(
        remote,
        &RemoteCommand::sh(READ, Vec::<String>::new()).read_only(),
        "reading ~/.ssh/authorized_keys",
    )
    .await?;
    Ok(Read {
        text: out.stdout_text(),
        sha256: format!("{:x}", Sha256::digest(&out.stdout)),
    })
}

/// `authorized_keys` as read, and the checksum a write checks it against.
struct Read {
    text: String,
    sha256: String,
}

async fn list(ctx: &Ctx) -> Result<Exit> {
    let keys: Vec<Key> = read(ctx)
        .await?
        .text
        .lines()
        .filter_map(parse_key)
        .collect();
    if ctx.out.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            keys: &'a [Key],
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new("access list", ctx, true),
            keys: &keys,
        })?;
        return Ok(Exit::Ok);
    }
    let rows = keys
        .iter()
        .map(|k| vec![k.kind.clone(), k.fingerprint.clone(), k.comment.clone()])
        .collect();
    ctx.out
        .print(&ctx.out.table(&["TYPE", "FINGERPRINT", "COMMENT"], rows))?;
    Ok(Exit::Ok)
}

async fn add(ctx: &Ctx, line: &str, key: &Key) -> Result<Exit> {
    let read_before = read(ctx).await?;
    let text = &read_before.text;
    if text
        .lines()
        .filter_map(parse_key)
        .any(|k| k.blob == key.blob)
    {
        ctx.out.status(format!(
            "{} {} is already authorized: nothing to do",
            key.kind, key.fingerprint
        ));
        return report_change(ctx, "access add", &key.fingerprint, false);
    }
    let mut new = text.to_string();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(line);
    new.push('\n');
    apply(ctx, "access add", &key.fingerprint, &read_before, &new).await
}

async fn remove(ctx: &Ctx, wanted: &str) -> Result<Exit> {
    let read_before = read(ctx).await?;
    let text = &read_before.text;
    let keys: Vec<Key> = text.lines().filter_map(parse_key).collect();
    let matching: Vec<&Key> = keys
        .iter()
        .filter(|k| k.fingerprint == wanted || (!k.comment.is_empty() && k.comment == wanted))
        .collect();
    if matching.is_empty() {
        return Err(Error::usage(format!(
            "no authorized key has the fingerprint or comment {wanted:?}"
        ))
        .with_help("ctops access list shows them")
        .into());
    }
    let ours = local_identities(ctx);
    if let Some(k) = matching.iter().find(|k| ours.contains(&k.blob)) {
        return Err(Error::refused(format!(
            "refusing to remove {} ({}): it is the key this machine logs in with",
            k.fingerprint, k.comment
        ))
        .with_help("add another key and remove this one from a machine that uses the other")
        .into());
    }
    let gone: BTreeSet<&[u8]> = matching.iter().map(|k| k.blob.as_slice()).collect();
    if keys.iter().all(|k| gone.contains(k.blob.as_slice())) {
        return Err(Error::refused(
            "refusing to remove the last authorized key: nobody could log in",
        )
        .into());
    }
    let new: String = text
        .lines()
        .filter(|l| parse_key(l).is_none_or(|k| !gone.contains(k.blob.as_slice())))
        .map(|l| format!("{l}\n"))
        .collect();
    if !ctx.dry_run {
        ctx.confirm(&format!(
            "remove {} from {}",
            matching
                .iter()
                .map(|k| k.fingerprint.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            ctx.target_label()
        ))?;
    }
    let removed: Vec<&str> = matching.iter().map(|k| k.fingerprint.as_str()).collect();
    apply(ctx, "access remove", &removed.join(" "), &read_before, &new).await
}

/// Writes the new file, then proves a new connection logs in; puts the old file back if not.
async fn apply(ctx: &Ctx, command: &str, keys: &str, before: &Read, new: &str) -> Result<Exit> {
    let what = format!("{command} {keys}");
    let remote = ctx.remote().await?;
    if ctx.dry_run {
        ctx.out.status(format!(
            "dry run: would {what} in ~/.ssh/authorized_keys on {}",
            remote.host()
        ));
        return Ok(Exit::Ok);
    }
    let work = async {
        let out = remote
            .run_with_input(
                &RemoteCommand::sh(WRITE, [before.sha256.as_str()]),
                Some(new.as_bytes()),
            )
            .await?;
        if out.status == 75 {
            return Err(Error::refused(format!(
                "~/.ssh/authorized_keys on {} changed while ctops was working on it: nothing written",
                remote.host()
            ))
            .with_help("run the command again (it reads the file anew)"));
        }
        if out.status != 0 {
            return Err(Error::failed(format!(
                "cannot write ~/.ssh/authorized_keys on {}: {}",
                remote.host(),
                out.stderr_text().trim()
            )));
        }
        if let Err(e) = crate::remote::probe_new_login(&ctx.target).await {
            let put_back = RemoteCommand::sh(PUT_BACK, Vec::<String>::new());
            if let Err(back) = super::run_step(
                remote,
                &put_back,
                "putting the previous authorized_keys back",
            )
            .await
            {
                return Err(Error::stranded(
                    format!("a new connection could not log in after the change ({e}), and {back}"),
                    "authorized_keys changed: the new file is in place; the previous one is ~/.ssh/authorized_keys.ctops-before",
                )
                .with_help("log in with a key that still works and move ~/.ssh/authorized_keys.ctops-before back over ~/.ssh/authorized_keys"));
            }
            return Err(Error::failed(format!(
                "a new connection could not log in after the change ({e}); the previous authorized_keys is back"
            )));
        }
        super::run_step(
            remote,
            &RemoteCommand::sh(DROP_BACKUP, Vec::<String>::new()),
            "removing the backup of authorized_keys",
        )
        .await?;
        Ok(())
    };
    lock::hold(remote, &ctx.target.state_dir, &what, work).await?;
    ctx.out.status(format!(
        "{what}: done; a new connection to {} logs in",
        remote.host()
    ));
    report_change(ctx, command, keys, true)
}

fn report_change(ctx: &Ctx, command: &str, keys: &str, changed: bool) -> Result<Exit> {
    if ctx.out.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            envelope: Envelope<'a>,
            fingerprints: Vec<&'a str>,
            changed: bool,
        }
        ctx.out.json_doc(&Doc {
            envelope: Envelope::new(command, ctx, true),
            fingerprints: keys.split(' ').collect(),
            changed,
        })?;
    }
    Ok(Exit::Ok)
}

/// The public keys this machine may log in with: its identity files' `.pub` (as the ssh
/// config resolves them) and the agent's keys.
fn local_identities(ctx: &Ctx) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut g = std::process::Command::new("ssh");
    if let Some(cfg) = &ctx.target.ssh_config {
        g.arg("-F").arg(cfg);
    }
    let resolved = g.arg("-G").arg(&ctx.target.ssh).output();
    let home = std::env::var("HOME").unwrap_or_default();
    for line in resolved
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
    {
        if let Some(path) = line.strip_prefix("identityfile ") {
            let path = path.trim().replacen('~', &home, 1);
            if let Ok(text) = std::fs::read_to_string(format!("{path}.pub")) {
                keys.extend(text.lines().filter_map(parse_key).map(|k| k.blob));
            }
        }
    }
    if let Ok(agent) = std::process::Command::new("ssh-add").arg("-L").output() {
        keys.extend(
            String::from_utf8_lossy(&agent.stdout)
                .lines()
                .filter_map(parse_key)
                .map(|k| k.blob),
        );
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_options_and_fingerprints_match_ssh_keygen() {
        // `ssh-keygen -lf` on this key prints SHA256:gBJPX98cGrq7xlqWz9/eGf+W4BfKAJ23l4FiBbiLYZI
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHGkhvE3Q/lUjMuIUDfZUmR0qTTzZ2wvaM0aiomwYqDZ ops@laptop";
        let key = parse_key(line).unwrap();
        assert_eq!(key.kind, "ssh-ed25519");
        assert_eq!(key.comment, "ops@laptop");
        assert_eq!(
            key.fingerprint,
            "SHA256:gBJPX98cGrq7xlqWz9/eGf+W4BfKAJ23l4FiBbiLYZI"
        );
        let with_options = format!("no-pty,from=\"10.0.0.1\" {line}");
        assert_eq!(
            parse_key(&with_options).unwrap().fingerprint,
            key.fingerprint
        );
        assert!(
            parse_key("ssh-ed25519 bm90IGEga2V5 x").is_none(),
            "blob must name its type"
        );
        assert!(parse_key("# a comment").is_none());
    }
}
