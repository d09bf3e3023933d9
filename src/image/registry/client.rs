//! One repository on one registry endpoint, over oci-client.
//!
//! oci-client does the protocol: the `/v2/` challenge, basic auth, the bearer token
//! endpoint and token reuse, Accept headers, `Range` requests. reqwest follows redirects
//! and drops the Authorization header when one leaves the registry's host and port.
//! What petri adds, because oci-client leaves it to the caller:
//! - retries with exponential backoff for connection errors, 5xx and 429;
//! - checks that do not trust the registry: every manifest hashes to the digest it was
//!   asked by (or that its index gave), its size matches the index's descriptor, its
//!   shape matches its declared media type (CVE-2021-41190), the config hashes to its
//!   descriptor, and the layer count matches the config's diff_ids;
//! - a blocking `Read` over a layer's body that resumes with `Range` where a download
//!   broke off, so the store's unpack threads can consume it like a file.

use std::future::Future;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use tokio::runtime::Handle;

use super::config::{Credentials, Endpoint};
use super::{PullError, PullProgress};
use crate::image::digest::Digest;
use crate::image::oci::{media, Descriptor, Document, ImageConfig, Platform};
use crate::image::reference::Reference;
use crate::image::source::{manifest_layers, ResolvedImage, SourceLayer};

/// How many times a request is tried before its error is reported.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_DOCUMENT: usize = 8 << 20;

const MANIFEST_TYPES: &[&str] = &[
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_LIST,
];

/// A repository on one endpoint, authenticated for pulls.
pub struct Remote {
    client: Client,
    target: oci_client::Reference,
    auth: RegistryAuth,
    /// The endpoint actually reached: the registry itself or a mirror.
    host: String,
    origin: String,
}

impl Remote {
    /// Connects to `endpoint` for `reference`'s repository and authenticates (anonymously
    /// without credentials), so that refused credentials are reported before anything
    /// is fetched.
    pub async fn connect(
        reference: &Reference,
        endpoint: &Endpoint,
        creds: Option<Credentials>,
    ) -> Result<Remote, PullError> {
        let origin = format!("{}/{}", endpoint.url(), reference.repository);
        // reqwest is built without a default TLS backend choice; ring is petri's. A second
        // install (another pull in this process) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("petri/", env!("CARGO_PKG_VERSION")),
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|source| PullError::Registry {
            origin: origin.clone(),
            op: "create a client for",
            source,
        })?;
        let mut target = oci_client::Reference::with_tag(
            reference.registry.clone(),
            reference.repository.clone(),
            "latest".into(),
        );
        if target.resolve_registry() != endpoint.host {
            target.set_mirror_registry(endpoint.host.clone());
        }
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        let remote = Remote {
            client,
            target,
            auth,
            host: endpoint.host.clone(),
            origin,
        };
        remote
            .retry("authenticate with", || {
                remote
                    .client
                    .auth(&remote.target, &remote.auth, RegistryOperation::Pull)
            })
            .await?;
        Ok(remote)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Resolves `reference` (tag or digest) to one image for `platform`: the manifest,
    /// verified config and layer list.
    pub async fn resolve(&self, reference: &Reference, platform: &Platform) -> Result<ResolvedImage, PullError> {
        let asked = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        };
        let (mut digest, mut bytes) = self.manifest(&asked, reference.digest.as_ref()).await?;
        let mut document = self.parse(&bytes, None, "manifest")?;
        // An index leads to one manifest; an index inside an index is followed once more.
        for _ in 0..2 {
            let Document::Index(index) = &document else { break };
            let entries: Vec<&Descriptor> = index.manifests.iter().collect();
            let chosen = platform.pick(&entries).map_err(|available| PullError::NoPlatform {
                origin: self.origin.clone(),
                wanted: platform.clone(),
                available,
            })?;
            let chosen = chosen.clone();
            (digest, bytes) = self.manifest(&chosen.digest.to_string(), Some(&chosen.digest)).await?;
            if bytes.len() as u64 != chosen.size {
                return Err(self.verify("manifest", &chosen.digest, "size differs from the index's descriptor"));
            }
            document = self.parse(&bytes, Some(&chosen.media_type), "manifest")?;
        }
        let Document::Manifest(manifest) = document else {
            return Err(self.invalid(format!("{asked}: indexes nested more than two deep")));
        };
        let config_bytes = self.document_blob(&manifest.config).await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| self.invalid(format!("config {}: {e}", manifest.config.digest)))?;
        let layers = manifest_layers(&manifest.layers, &config, Digest::to_string).map_err(|d| self.invalid(d))?;
        Ok(ResolvedImage {
            manifest: Some((digest, bytes)),
            config_digest: manifest.config.digest.clone(),
            config_bytes,
            config,
            layers,
            names: Vec::new(),
        })
    }

    /// Fetches a manifest or index by tag or digest; when `expect` is given, the body
    /// must hash to it.
    async fn manifest(&self, reference: &str, expect: Option<&Digest>) -> Result<(Digest, Vec<u8>), PullError> {
        let target = self.at(reference);
        let (body, _) = self
            .retry("fetch the manifest from", || {
                self.client.pull_manifest_raw(&target, &self.auth, MANIFEST_TYPES)
            })
            .await?;
        if body.len() > MAX_DOCUMENT {
            return Err(self.invalid(format!("manifest {reference} is larger than {MAX_DOCUMENT} bytes")));
        }
        let actual = Digest::of(&body);
        if let Some(expect) = expect {
            if &actual != expect {
                return Err(self.verify("manifest", expect, &format!("the body hashes to {actual}")));
            }
        }
        Ok((actual, body.to_vec()))
    }

    /// Fetches a small blob (the config) whole and checks its size and digest.
    async fn document_blob(&self, d: &Descriptor) -> Result<Vec<u8>, PullError> {
        if d.size > MAX_DOCUMENT as u64 {
            return Err(self.invalid(format!("config {} is larger than {MAX_DOCUMENT} bytes", d.digest)));
        }
        let digest = d.digest.to_string();
        let target = self.at(&digest);
        let body = self
            .retry("fetch the config from", || async {
                let mut out = Vec::with_capacity(d.size as usize);
                self.client.pull_blob(&target, digest.as_str(), &mut out).await?;
                Ok(out)
            })
            .await?;
        let actual = Digest::of(&body);
        if actual != d.digest || body.len() as u64 != d.size {
            return Err(self.verify(
                "config",
                &d.digest,
                &format!("got {} bytes hashing to {actual}", body.len()),
            ));
        }
        Ok(body)
    }

    fn parse(&self, bytes: &[u8], declared: Option<&str>, what: &str) -> Result<Document, PullError> {
        Document::parse(bytes, declared).map_err(|source| PullError::Document {
            origin: self.origin.clone(),
            what: what.to_string(),
            source,
        })
    }

    /// The repository at a tag or digest.
    fn at(&self, reference: &str) -> oci_client::Reference {
        let mut r = if reference.contains(':') {
            self.target.clone_with_digest(reference.to_string())
        } else {
            oci_client::Reference::with_tag(
                self.target.registry().to_string(),
                self.target.repository().to_string(),
                reference.to_string(),
            )
        };
        if r.resolve_registry() != self.host {
            r.set_mirror_registry(self.host.clone());
        }
        r
    }

    /// Runs `f` until it succeeds, fails for good, or has been tried ATTEMPTS times.
    async fn retry<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    tracing::warn!(origin = %self.origin, op, error = %e, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                r => return r.map_err(|source| self.error(op, source)),
            }
        }
    }

    fn error(&self, op: &'static str, source: OciDistributionError) -> PullError {
        match source {
            OciDistributionError::UnauthorizedError { .. } => PullError::Unauthorized {
                origin: self.origin.clone(),
                with_credentials: !matches!(self.auth, RegistryAuth::Anonymous),
            },
            source => PullError::Registry {
                origin: self.origin.clone(),
                op,
                source,
            },
        }
    }

    fn verify(&self, what: &str, digest: &Digest, detail: &str) -> PullError {
        PullError::Verify {
            origin: self.origin.clone(),
            what: format!("{what} {digest}"),
            detail: detail.to_string(),
        }
    }

    fn invalid(&self, detail: String) -> PullError {
        PullError::Invalid {
            origin: self.origin.clone(),
            detail,
        }
    }
}

/// Errors worth another try: the network, the server's own failures, rate limits.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(e) => {
            e.is_connect()
                || e.is_timeout()
                || e.is_body()
                || e.is_request()
                || e.status().is_some_and(|s| s.is_server_error() || s.as_u16() == 429)
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// A layer blob as a blocking reader, for the store's unpack threads. A body that breaks
/// off is re-requested from where it stopped (`Range`), ATTEMPTS times at most; what the
/// bytes hash to is checked by the layer pipeline, not here.
pub struct BlobReader {
    runtime: Handle,
    remote: Arc<Remote>,
    digest: Digest,
    size: u64,
    progress: Arc<dyn PullProgress>,
    body: Option<BoxStream<'static, io::Result<Bytes>>>,
    /// Bytes of a whole-body (200) answer to a resumed request that were already read.
    skip: u64,
    chunk: Bytes,
    received: u64,
    failures: u32,
}

impl BlobReader {
    pub fn new(runtime: Handle, remote: Arc<Remote>, layer: &SourceLayer, progress: Arc<dyn PullProgress>) -> Self {
        let digest = layer.expect.digest.clone().expect("registry layers have digests");
        BlobReader {
            runtime,
            remote,
            size: layer.expect.size.unwrap_or(u64::MAX),
            digest,
            progress,
            body: None,
            skip: 0,
            chunk: Bytes::new(),
            received: 0,
            failures: 0,
        }
    }

    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.body.is_none() {
                match self.open().await {
                    Ok(()) => {}
                    Err(e) => {
                        self.failed(e).await?;
                        continue;
                    }
                }
            }
            let body = self.body.as_mut().expect("opened");
            match body.next().await {
                Some(Ok(mut bytes)) => {
                    let skipped = self.skip.min(bytes.len() as u64);
                    self.skip -= skipped;
                    let bytes = bytes.split_off(skipped as usize);
                    if bytes.is_empty() {
                        continue;
                    }
                    self.received += bytes.len() as u64;
                    self.progress.layer_bytes(&self.digest, bytes.len() as u64);
                    return Ok(Some(bytes));
                }
                // Everything arrived: a late error is oci-client's own digest check, which
                // the layer pipeline repeats with a better message.
                _ if self.received >= self.size => return Ok(None),
                Some(Err(e)) => self.failed(e).await?,
                None => {
                    self.failed(io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended early"))
                        .await?
                }
            }
        }
    }

    /// Requests the blob from the first byte not yet received.
    async fn open(&mut self) -> io::Result<()> {
        let r = &self.remote;
        let target = r.at(&self.digest.to_string());
        let digest = self.digest.to_string();
        let body = if self.received == 0 {
            r.client.pull_blob_stream(&target, digest.as_str()).await
        } else {
            r.client
                .pull_blob_stream_partial(&target, digest.as_str(), self.received, None)
                .await
                .map(|resp| match resp {
                    BlobResponse::Full(s) => {
                        self.skip = self.received;
                        s
                    }
                    BlobResponse::Partial(s) => s,
                })
        };
        match body {
            Ok(s) => {
                self.body = Some(s.stream);
                Ok(())
            }
            Err(e) if transient(&e) => Err(io::Error::other(e)),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// Counts a failure; waits before the next try, or gives up with `e`.
    async fn failed(&mut self, e: io::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if self.failures >= ATTEMPTS || e.kind() == io::ErrorKind::InvalidData {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{} blob {} after {} bytes: {e}",
                    self.remote.origin, self.digest, self.received
                ),
            ));
        }
        tracing::warn!(blob = %self.digest, received = self.received, error = %e, "download broke off; resuming");
        self.progress.layer_retry(&self.digest, &e.to_string());
        tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(self.failures - 1)).await;
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let handle = self.runtime.clone();
            match handle.block_on(self.next_chunk())? {
                Some(bytes) => self.chunk = bytes,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
