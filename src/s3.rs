//! The S3 API of the host's object store, reached through a port forward of the one SSH
//! connection (so the store need not be exposed). Requests are signed by `rusty-s3`, which
//! keeps keys byte for byte (`a//b`, a trailing `/`, spaces, unicode), and sent with
//! `reqwest`; bodies stream to and from files, so memory stays flat whatever their size.
//! ETags are compared for equality only: their form differs between servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::error::Error;

/// How long a signed request stays valid: long enough for one large body.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
const USER_METADATA: &str = "x-amz-meta-";

/// One object as a listing shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub size: u64,
    pub last_modified: String,
}

/// What a download learnt about an object besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub sha256: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

pub struct Store {
    endpoint: Url,
    credentials: Credentials,
    http: reqwest::Client,
    /// What the messages call the store: the endpoint as configured, on its host.
    name: String,
}

impl Store {
    /// `endpoint` as seen from the host; `via` the local end of the port forward to it.
    pub fn new(
        endpoint: &str,
        via: SocketAddr,
        access_key: &str,
        secret_key: &str,
        host: &str,
    ) -> Result<Self, Error> {
        let configured = Url::parse(endpoint)
            .map_err(|e| Error::usage(format!("backup.minio.endpoint {endpoint:?}: {e}")))?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60));
        let mut endpoint = configured.clone();
        match configured.domain() {
            // Keep the name (TLS and the signed Host header use it); connect to the forward.
            Some(domain) => http = http.resolve(domain, via),
            None => {
                let _ = endpoint.set_ip_host(via.ip());
                let _ = endpoint.set_port(Some(via.port()));
            }
        }
        Ok(Store {
            name: format!("{configured} on {host}"),
            endpoint,
            credentials: Credentials::new(access_key, secret_key),
            http: http
                .build()
                .map_err(|e| Error::failed(format!("HTTP client: {e}")))?,
        })
    }

    fn bucket(&self, name: &str) -> Result<Bucket, Error> {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .map_err(|e| Error::usage(format!("bucket {name:?}: {e}")))
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::failed(format!("{what} at the object store ({}): {e}", self.name))
            .with_help("check backup.minio (endpoint, credential keys in .env) and that the store runs: ctops health")
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let response = request.send().await.map_err(|e| self.failed(what, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let code = body
            .split("<Code>")
            .nth(1)
            .and_then(|s| s.split("</Code>").next())
            .unwrap_or("");
        Err(self.failed(what, format!("HTTP {status} {code}")))
    }

    /// Every object of `bucket`, following continuation tokens (servers page at 1000).
    pub async fn list(&self, bucket: &str) -> Result<Vec<Listed>, Error> {
        let b = self.bucket(bucket)?;
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&b, Some(&self.credentials));
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let what = format!("listing bucket {bucket}");
            let response = self
                .send(&what, self.http.get(action.sign(SIGNED_FOR)))
                .await?;
            let text = response.text().await.map_err(|e| self.failed(&what, e))?;
            let page = ListObjectsV2::parse_response(&text).map_err(|e| self.failed(&what, e))?;
            objects.extend(page.contents.into_iter().map(|c| Listed {
                key: c.key,
                etag: c.etag.unwrap_or_default(),
                size: c.size.unwrap_or(0),
                last_modified: c.last_modified.unwrap_or_default(),
            }));
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(objects),
            }
        }
    }

    /// Streams an object into `path`, hashing as it goes.
    pub async fn get_to(&self, bucket: &str, key: &str, path: &Path) -> Result<Fetched, Error> {
        let b = self.bucket(bucket)?;
        let url = b.get_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        let what = format!("GET {bucket}/{key}");
        let response = self.send(&what, self.http.get(url)).await?;
        let headers = response.headers().clone();
        // Users' data (voice messages): private whatever the umask.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .await
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.failed(&what, e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
        }
        file.sync_all()
            .await
            .map_err(|e| Error::failed(format!("cannot flush {}: {e}", path.display())))?;
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let metadata = headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.as_str().strip_prefix(USER_METADATA)?;
                Some((name.to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        Ok(Fetched {
            sha256: format!("{:x}", hasher.finalize()),
            size,
            content_type: text("content-type"),
            metadata,
        })
    }

    /// Uploads `path` as `key` with its content type and user metadata.
    pub async fn put_from(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let b = self.bucket(bucket)?;
        let mut action = b.put_object(Some(&self.credentials), key);
        let headers: Vec<(String, String)> = content_type
            .map(|t| ("content-type".to_string(), t.to_string()))
            .into_iter()
            .chain(
                metadata
                    .iter()
                    .map(|(k, v)| (format!("{USER_METADATA}{k}"), v.clone())),
            )
            .collect();
        for (name, value) in &headers {
            action.headers_mut().insert(name.clone(), value.clone());
        }
        let url = action.sign(SIGNED_FOR);
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::failed(format!("cannot read {}: {e}", path.display())))?;
        let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let mut request = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        self.send(&format!("PUT {bucket}/{key}"), request).await?;
        Ok(())
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), Error> {
        let b = self.bucket(bucket)?;
        let url = b
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.send(&format!("DELETE {bucket}/{key}"), self.http.delete(url))
            .await?;
        Ok(())
    }

    /// Creates `bucket` unless it exists (a restore onto a fresh store).
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), Error> {
        let b = self.bucket(bucket)?;
        let head = b.head_bucket(Some(&self.credentials)).sign(SIGNED_FOR);
        if let Ok(r) = self.http.head(head).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        let url = b.create_bucket(&self.credentials).sign(SIGNED_FOR);
        self.send(&format!("creating bucket {bucket}"), self.http.put(url))
            .await?;
        Ok(())
    }
}
