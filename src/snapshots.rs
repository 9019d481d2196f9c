//! Runbook 5.4, `backup minio` and `restore minio`: the buckets mirrored **off the host** into
//! dated snapshots under `local_dir/minio/`, where the runbook ran `mc mirror` (which keeps
//! one copy, so a deletion or an overwrite reaches the backup at the next run).
//!
//! Layout: `objects/ab/abcd…` holds every body once, named by its sha256 (content
//! addressing, so unchanged objects are neither fetched nor stored again); a snapshot is one
//! JSON file, `snapshots/minio-YYYYMMDDTHHMMSSZ.json`, listing per bucket every key with its
//! size, ETag, sha256, content type and user metadata. It is written last, so a killed run
//! leaves at most unreferenced bodies, which prune sweeps. Older snapshots keep what later
//! ones deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{is_sha256, local, Listed};
use crate::context::Ctx;
use crate::error::{Error, Exit};
use crate::s3::Store;

/// Concurrent transfers; each is a channel of the SSH connection's port forward.
const TRANSFERS: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub kind: String,
    pub name: String,
    /// UTC, RFC 3339, from this machine's clock (the snapshot lives here).
    pub created: String,
    pub endpoint: String,
    pub buckets: BTreeMap<String, Vec<Object>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: String,
    pub sha256: String,
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl Snapshot {
    fn listed(&self) -> Listed {
        Listed {
            kind: "minio".into(),
            name: self.name.clone(),
            place: "local".into(),
            size: self.buckets.values().flatten().map(|o| o.size).sum(),
            created: self.created.clone(),
            sha256: None,
            verified: false,
            made_by: None,
        }
    }
}

/// Where snapshots and bodies live on this machine.
struct Repo {
    root: PathBuf,
}

impl Repo {
    fn of(ctx: &Ctx) -> Self {
        Repo {
            root: ctx.target.local_dir.join("minio"),
        }
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn body(&self, sha256: &str) -> PathBuf {
        // Snapshots are checked on reading (64 hex digits); `get` keeps this total anyway.
        self.root
            .join("objects")
            .join(sha256.get(..2).unwrap_or_default())
            .join(sha256)
    }

    /// Every snapshot, oldest first (names sort by time).
    fn snapshots(&self) -> Result<Vec<Snapshot>, Error> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.snapshots_dir()) else {
            return Ok(found);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("minio-") && name.ends_with(".json")) {
                continue;
            }
            let text = std::fs::read(entry.path()).map_err(|e| {
                Error::failed(format!("cannot read {}: {e}", entry.path().display()))
            })?;
            let snapshot: Snapshot = serde_json::from_slice(&text).map_err(|e| {
                Error::failed(format!(
                    "snapshot {} is unreadable: {e}",
                    entry.path().display()
                ))
            })?;
            if let Some(bad) = snapshot
                .buckets
                .values()
                .flatten()
                .find(|o| !is_sha256(&o.sha256))
            {
                return Err(Error::failed(format!(
                    "snapshot {} is damaged: {:?} has no valid sha256",
                    entry.path().display(),
                    bad.key
                ))
                .with_help("move the damaged snapshot out of the snapshots folder"));
            }
            found.push(snapshot);
        }
        found.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(found)
    }

    fn write_snapshot(&self, snapshot: &Snapshot) -> Result<PathBuf, Error> {
        let dir = self.snapshots_dir();
        let io = |e: std::io::Error| {
            Error::failed(format!("cannot write a snapshot in {}: {e}", dir.display()))
        };
        local::private_dir(&dir)?;
        let path = dir.join(format!("{}.json", snapshot.name));
        let text = serde_json::to_vec_pretty(snapshot).map_err(|e| io(e.into()))?;
        local::write_atomic(&path, &text)?;
        Ok(path)
    }

    /// Moves a downloaded body into place under its hash (another key may already have
    /// brought the same bytes).
    fn keep_body(&self, tmp: &Path, sha256: &str) -> Result<(), Error> {
        let path = self.body(sha256);
        let io = |e: std::io::Error| Error::failed(format!("cannot store {}: {e}", path.display()));
        if path.exists() {
            return std::fs::remove_file(tmp).map_err(io);
        }
        local::private_dir(path.parent().expect("bodies live in a folder"))?;
        std::fs::rename(tmp, &path).map_err(io)
    }

    /// Removes temporary files a killed run left behind (never a live process's).
    fn sweep_temporaries(&self) {
        for dir in [self.root.join("tmp"), self.snapshots_dir()] {
            local::sweep_temporaries(&dir);
        }
    }
}

/// Connects to the store through a port forward, with the credentials read from `.env` on
/// the host (they never leave ctops's memory).
async fn open_store(ctx: &Ctx) -> Result<Store, Error> {
    let t = &ctx.target;
    let m = &t.backup.minio;
    let endpoint = m.endpoint.clone().unwrap_or_default();
    let remote = ctx.remote().await?;
    let env = crate::envchange::read(ctx).await?;
    let credential = |var: &Option<String>| {
        let var = var.as_deref().unwrap_or_default();
        env.get(var).ok_or_else(|| {
            Error::usage(format!("{var} is not set in {} on {}", crate::envchange::env_path(ctx), remote.host()))
                .with_help("backup.minio.access_key_var and secret_key_var name the .env keys holding the store's credentials")
        })
    };
    let (access, secret) = (
        credential(&m.access_key_var)?,
        credential(&m.secret_key_var)?,
    );
    let url = url::Url::parse(&endpoint)
        .map_err(|e| Error::usage(format!("backup.minio.endpoint {endpoint:?}: {e}")))?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let via = remote.forward(&host, port).await?;
    Store::new(&endpoint, via, &access, &secret, remote.host())
}

fn buckets(ctx: &Ctx) -> Result<Vec<String>, Error> {
    let buckets = ctx.target.backup.minio.buckets.clone().unwrap_or_default();
    if buckets.is_empty() {
        return Err(Error::usage(
            "no buckets to back up: backup.minio.buckets is empty",
        ));
    }
    Ok(buckets)
}

/// `backup minio`: a new snapshot; returns it as listed.
pub async fn backup(ctx: &Ctx) -> Result<Vec<Listed>> {
    let buckets = buckets(ctx)?;
    let repo = Repo::of(ctx);
    if ctx.dry_run {
        ctx.out.status(format!(
            "dry run: would mirror {} from {} into {}",
            buckets.join(", "),
            ctx.target.backup.minio.endpoint.as_deref().unwrap_or(""),
            repo.root.display()
        ));
        return Ok(Vec::new());
    }
    let _local = local::lock(&ctx.target.local_dir, "backup minio", local::LOCK_WAIT).await?;
    let store = open_store(ctx).await?;
    let (snapshot, _, fetched) = take_snapshot(ctx, &store, &repo, &buckets).await?;
    if !ctx.out.quiet && ctx.out.verbose > 0 {
        ctx.out.status(format!(
            "minio snapshot {}: {} objects, {fetched} fetched",
            snapshot.name,
            snapshot.buckets.values().map(Vec::len).sum::<usize>()
        ));
    }
    Ok(vec![snapshot.listed()])
}

/// Lists every bucket, fetches only what the newest snapshot does not hold already, writes
/// the snapshot last. Returns it, its path and how many bodies were fetched.
async fn take_snapshot(
    ctx: &Ctx,
    store: &Store,
    repo: &Repo,
    buckets: &[String],
) -> Result<(Snapshot, PathBuf, usize), Error> {
    // Users' data: the whole tree private, including what earlier versions left open.
    local::private_dir(&repo.root)?;
    repo.sweep_temporaries();
    let previous = repo.snapshots()?.pop();
    let tmp_dir = repo.root.join("tmp");
    local::private_dir(&tmp_dir)?;
    let mut taken = BTreeMap::new();
    let mut fetched = 0;
    let mut bar = ctx.out.byte_bar("fetch objects", None);
    for bucket in buckets {
        let known: BTreeMap<&str, &Object> = previous
            .iter()
            .flat_map(|s| s.buckets.get(bucket))
            .flatten()
            .map(|o| (o.key.as_str(), o))
            .collect();
        let listing = store.list(bucket).await?;
        let jobs = listing.into_iter().enumerate().map(|(n, listed)| {
            let reuse = known
                .get(listed.key.as_str())
                .filter(|o| {
                    o.etag == listed.etag
                        && o.size == listed.size
                        && o.last_modified == listed.last_modified
                        && repo.body(&o.sha256).exists()
                })
                .map(|o| (*o).clone());
            let tmp = tmp_dir.join(format!(".tmp-{}-{n}", std::process::id()));
            let bar = &bar;
            async move {
                if let Some(object) = reuse {
                    return Ok::<_, Error>((object, false));
                }
                let got = store.get_to(bucket, &listed.key, &tmp).await;
                let got = match got {
                    Ok(got) => got,
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                };
                repo.keep_body(&tmp, &got.sha256)?;
                bar.inc(got.size);
                Ok((
                    Object {
                        key: listed.key,
                        size: got.size,
                        etag: listed.etag,
                        last_modified: listed.last_modified,
                        sha256: got.sha256,
                        content_type: got.content_type,
                        metadata: got.metadata,
                    },
                    true,
                ))
            }
        });
        let objects: Vec<(Object, bool)> = futures::stream::iter(jobs)
            .buffer_unordered(TRANSFERS)
            .try_collect()
            .await?;
        fetched += objects.iter().filter(|(_, got)| *got).count();
        let mut objects: Vec<Object> = objects.into_iter().map(|(o, _)| o).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        taken.insert(bucket.clone(), objects);
    }
    crate::fault::pause_point("pause-before-snapshot", |m| bar.println(m)).await;
    bar.finish();
    let now = SystemTime::now();
    let created = humantime::format_rfc3339_seconds(now).to_string();
    let snapshot = Snapshot {
        kind: "minio".into(),
        name: format!("minio-{}", created.replace(['-', ':'], "")),
        created,
        endpoint: ctx.target.backup.minio.endpoint.clone().unwrap_or_default(),
        buckets: taken,
    };
    let path = repo.write_snapshot(&snapshot)?;
    tracing::debug!(fetched, snapshot = %path.display(), "snapshot written");
    Ok((snapshot, path, fetched))
}

/// The snapshot `as_of` names: a snapshot's name, an RFC 3339 time, or a date (the end of
/// that UTC day); without one, the newest.
pub fn choose<'a>(snapshots: &'a [Snapshot], as_of: Option<&str>) -> Result<&'a Snapshot, Error> {
    let Some(as_of) = as_of else {
        return snapshots.last().ok_or_else(|| {
            Error::refused("no minio snapshot to restore from: run ctops backup minio first")
        });
    };
    if let Some(s) = snapshots.iter().find(|s| s.name == as_of) {
        return Ok(s);
    }
    let limit = if as_of.len() == 10 {
        format!("{as_of}T23:59:59Z")
    } else {
        as_of.to_string()
    };
    let limit = humantime::parse_rfc3339_weak(limit.trim_end_matches('Z'))
        .map_err(|_| {
            Error::usage(format!(
                "--as-of {as_of:?}: expected a date (2026-11-26), a UTC time (2026-11-26T08:00:00Z) or a snapshot name"
            ))
        })?;
    snapshots
        .iter()
        .rev()
        .find(|s| {
            humantime::parse_rfc3339_weak(s.created.trim_end_matches('Z')).is_ok_and(|t| t <= limit)
        })
        .ok_or_else(|| {
            Error::refused(format!("no minio snapshot as of {as_of}"))
                .with_help("ctops backup list shows the snapshots and their times")
        })
}

/// What turns `current` into `wanted`: keys to upload and keys to delete.
pub fn changes<'a>(current: &[Object], wanted: &'a [Object]) -> (Vec<&'a Object>, Vec<String>) {
    let now: BTreeMap<&str, &Object> = current.iter().map(|o| (o.key.as_str(), o)).collect();
    let keep: BTreeSet<&str> = wanted.iter().map(|o| o.key.as_str()).collect();
    let upload = wanted
        .iter()
        .filter(|w| {
            now.get(w.key.as_str()).is_none_or(|c| {
                c.sha256 != w.sha256 || c.content_type != w.content_type || c.metadata != w.metadata
            })
        })
        .collect();
    let delete = current
        .iter()
        .filter(|c| !keep.contains(c.key.as_str()))
        .map(|c| c.key.clone())
        .collect();
    (upload, delete)
}

/// Every body `snapshot` needs is here and has its hash; checked before the store is touched.
fn check_bodies(repo: &Repo, snapshot: &Snapshot) -> Result<(), Error> {
    let mut checked = BTreeSet::new();
    for object in snapshot.buckets.values().flatten() {
        if !checked.insert(object.sha256.as_str()) {
            continue;
        }
        let path = repo.body(&object.sha256);
        let mut file = std::fs::File::open(&path).map_err(|e| {
            Error::refused(format!(
                "snapshot {} is incomplete: {} ({}): {e}",
                snapshot.name,
                object.key,
                path.display()
            ))
        })?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .map_err(|e| Error::failed(format!("cannot read {}: {e}", path.display())))?;
        if format!("{:x}", hasher.finalize()) != object.sha256 {
            return Err(Error::refused(format!(
                "snapshot {} is damaged: {} does not match its checksum; nothing was changed",
                snapshot.name,
                path.display()
            )));
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct RestoreDoc<'a> {
    #[serde(flatten)]
    envelope: crate::report::Envelope<'a>,
    snapshot: String,
    safety_snapshot: Option<String>,
    uploaded: usize,
    deleted: usize,
}

/// `restore minio [--as-of DATE]`: the buckets made exactly as in the chosen snapshot, after
/// a snapshot of their current state (the way back).
pub async fn restore(ctx: &Ctx, as_of: Option<&str>) -> Result<Exit> {
    let repo = Repo::of(ctx);
    // Held from before the snapshot is chosen until the buckets match it: a prune meanwhile
    // could remove the snapshot or bodies of the safety snapshot being taken.
    let _local = match ctx.dry_run {
        true => None,
        false => Some(local::lock(&ctx.target.local_dir, "restore minio", local::LOCK_WAIT).await?),
    };
    let snapshots = repo.snapshots()?;
    let wanted = choose(&snapshots, as_of)?.clone();
    check_bodies(&repo, &wanted)?;
    let buckets: Vec<String> = wanted.buckets.keys().cloned().collect();
    ctx.out.status(format!(
        "restore minio on {} to snapshot {} ({})",
        ctx.target_label(),
        wanted.name,
        wanted.created
    ));
    if ctx.dry_run {
        ctx.out.status(format!(
            "dry run: would snapshot {} first, then upload and delete objects until they match {}",
            buckets.join(", "),
            wanted.name
        ));
        return Ok(Exit::Ok);
    }
    ctx.confirm_word(
        &format!("replace the contents of {}", buckets.join(", ")),
        "minio",
    )?;
    let remote = ctx.remote().await?;
    // Interrupted part-way, the buckets hold the wanted objects uploaded so far and the
    // current ones not yet deleted: the safety snapshot, taken first, undoes it.
    let work = async {
        let store = open_store(ctx).await?;
        let (safety, _, _) = take_snapshot(ctx, &store, &repo, &buckets).await?;
        ctx.out.status(format!(
            "current state kept as snapshot {} (restore minio --as-of {} undoes this)",
            safety.name, safety.name
        ));
        let (mut uploaded, mut deleted) = (0, 0);
        let mut bar = ctx.out.byte_bar("upload objects", None);
        // From the first upload on, a failure leaves the buckets part-way (exit 6): what
        // is where, and the snapshot that undoes it.
        let changed = async {
            for (bucket, objects) in &wanted.buckets {
                store.ensure_bucket(bucket).await?;
                let current = safety.buckets.get(bucket).cloned().unwrap_or_default();
                let (upload, delete) = changes(&current, objects);
                // Uploads before deletions: a failure half-way loses nothing.
                let (repo, store, bar) = (&repo, &store, &bar);
                futures::stream::iter(upload.iter().map(|o| async move {
                    let body = repo.body(&o.sha256);
                    let content_type = o.content_type.as_deref();
                    store
                        .put_from(bucket, &o.key, &body, content_type, &o.metadata)
                        .await?;
                    bar.inc(o.size);
                    Ok::<_, Error>(())
                }))
                .buffer_unordered(TRANSFERS)
                .try_collect::<Vec<()>>()
                .await?;
                futures::stream::iter(delete.iter().map(|k| store.delete(bucket, k)))
                    .buffer_unordered(TRANSFERS)
                    .try_collect::<Vec<()>>()
                    .await?;
                uploaded += upload.len();
                deleted += delete.len();
            }
            Ok::<_, Error>(())
        }
        .await;
        bar.finish();
        if let Err(e) = changed {
            return Err(Error::stranded(
                format!("restore minio failed part-way: {e}"),
                format!(
                    "the buckets are partly restored ({uploaded} objects uploaded and {deleted} deleted in the buckets finished before the failure); snapshot {} holds their state before: `ctops restore minio --as-of {}` puts it back",
                    safety.name, safety.name
                ),
            ));
        }
        Ok::<_, Error>((safety.name, uploaded, deleted))
    };
    let (safety, uploaded, deleted) =
        crate::lock::hold(remote, &ctx.target.state_dir, "restore minio", work).await?;
    if ctx.out.json {
        ctx.out.json_doc(&RestoreDoc {
            envelope: crate::report::Envelope::new("restore minio", ctx, true),
            snapshot: wanted.name.clone(),
            safety_snapshot: Some(safety),
            uploaded,
            deleted,
        })?;
    } else {
        ctx.out.status(format!(
            "restored {} to snapshot {}: {uploaded} objects uploaded, {deleted} deleted",
            buckets.join(", "),
            wanted.name
        ));
    }
    Ok(Exit::Ok)
}

/// Snapshots for `backup list`.
pub fn list(ctx: &Ctx) -> Vec<Listed> {
    let repo = Repo::of(ctx);
    repo.snapshots()
        .unwrap_or_default()
        .iter()
        .map(Snapshot::listed)
        .collect()
}

/// Which snapshots the policy removes: older than `keep_days`, never the newest.
pub fn to_prune(snapshots: &[Snapshot], keep_days: u32, now: i64) -> Vec<&Snapshot> {
    let age_limit = i64::from(keep_days) * 86_400;
    let newest = snapshots.iter().map(|s| s.created.as_str()).max();
    snapshots
        .iter()
        .filter(|s| Some(s.created.as_str()) != newest)
        .filter(|s| crate::compose::epoch_of(&s.created).is_some_and(|t| now - t > age_limit))
        .collect()
}

/// `backup prune` for snapshots: lists the old ones and, when `apply`, removes them and then
/// the bodies no remaining snapshot refers to.
pub fn prune(ctx: &Ctx, apply: bool) -> Result<Vec<Listed>, Error> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let repo = Repo::of(ctx);
    let snapshots = repo.snapshots()?;
    let keep_days = ctx.target.backup.minio.keep_days.unwrap_or(30);
    let gone: Vec<&Snapshot> = to_prune(&snapshots, keep_days, now);
    let listed: Vec<Listed> = gone.iter().map(|s| s.listed()).collect();
    if !apply || gone.is_empty() {
        return Ok(listed);
    }
    for s in &gone {
        let path = repo.snapshots_dir().join(format!("{}.json", s.name));
        std::fs::remove_file(&path)
            .map_err(|e| Error::failed(format!("cannot remove {}: {e}", path.display())))?;
    }
    let gone_names: BTreeSet<&str> = gone.iter().map(|s| s.name.as_str()).collect();
    let referenced: BTreeSet<&str> = snapshots
        .iter()
        .filter(|s| !gone_names.contains(s.name.as_str()))
        .flat_map(|s| s.buckets.values().flatten())
        .map(|o| o.sha256.as_str())
        .collect();
    sweep_bodies(&repo.root.join("objects"), &referenced);
    Ok(listed)
}

fn sweep_bodies(dir: &Path, referenced: &BTreeSet<&str>) {
    for shard in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for body in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = body.file_name().to_string_lossy().into_owned();
            if !referenced.contains(name.as_str()) {
                let _ = std::fs::remove_file(body.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, sha: &str, content_type: &str) -> Object {
        Object {
            key: key.into(),
            size: 1,
            etag: "e".into(),
            last_modified: String::new(),
            sha256: sha.into(),
            content_type: Some(content_type.into()),
            metadata: BTreeMap::new(),
        }
    }

    fn snapshot(name: &str, created: &str) -> Snapshot {
        Snapshot {
            kind: "minio".into(),
            name: name.into(),
            created: created.into(),
            endpoint: String::new(),
            buckets: BTreeMap::new(),
        }
    }

    #[test]
    fn changes_upload_what_differs_and_delete_what_is_extra() {
        let current = [
            object("same", "1", "a/b"),
            object("body", "2", "a/b"),
            object("type", "3", "a/b"),
            object("extra", "4", "a/b"),
        ];
        let wanted = [
            object("same", "1", "a/b"),
            object("body", "9", "a/b"),
            object("type", "3", "c/d"),
            object("a//b", "5", "a/b"),
        ];
        let (upload, delete) = changes(&current, &wanted);
        let keys: Vec<&str> = upload.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["body", "type", "a//b"]);
        assert_eq!(delete, ["extra"]);
    }

    #[test]
    fn as_of_takes_a_name_a_day_or_a_time() {
        let all = [
            snapshot("minio-20261120T100000Z", "2026-11-20T10:00:00Z"),
            snapshot("minio-20261121T100000Z", "2026-11-21T10:00:00Z"),
            snapshot("minio-20261121T200000Z", "2026-11-21T20:00:00Z"),
        ];
        let pick = |as_of: Option<&str>| choose(&all, as_of).map(|s| s.name.clone());
        assert_eq!(pick(None).unwrap(), "minio-20261121T200000Z");
        assert_eq!(pick(Some("2026-11-20")).unwrap(), "minio-20261120T100000Z");
        assert_eq!(pick(Some("2026-11-21")).unwrap(), "minio-20261121T200000Z");
        assert_eq!(
            pick(Some("2026-11-21T12:00:00Z")).unwrap(),
            "minio-20261121T100000Z"
        );
        assert_eq!(
            pick(Some("minio-20261121T100000Z")).unwrap(),
            "minio-20261121T100000Z"
        );
        assert!(pick(Some("2026-11-19")).is_err());
        assert!(pick(Some("yesterday")).is_err());
    }

    #[test]
    fn prune_keeps_recent_snapshots_and_the_newest() {
        let now = crate::compose::epoch_of("2026-11-26T12:00:00Z").unwrap();
        let all = [
            snapshot("old", "2026-10-01T10:00:00Z"),
            snapshot("recent", "2026-11-20T10:00:00Z"),
        ];
        let gone: Vec<&str> = to_prune(&all, 30, now)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(gone, ["old"]);
        assert_eq!(to_prune(&all[..1], 0, now).len(), 0, "the newest survives");
    }
}
