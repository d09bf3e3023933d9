//! Pulling images from OCI registries (distribution API v2) straight into the store.
//!
//! A pull resolves the reference to one manifest and config (verified, see `client`),
//! then hands the store a `LayerSource` whose readers stream each missing layer's body
//! from the registry: download, decompression, hashing and unpacking of several layers
//! run at once, and nothing touches the disk but the unpacked files. The store's
//! all-or-nothing staging means a refused image leaves nothing behind; layers already in
//! the store are never fetched.
//!
//! The HTTP side runs on a small tokio runtime owned by the pull; the unpack threads
//! block on it for their next chunk. The runtime is shut down (its threads joined)
//! before `pull` returns, so a CLI caller is single-threaded again and may go on to
//! create namespaces.

mod client;
pub mod config;

use std::io::Read;
use std::sync::Arc;

use tokio::runtime::Handle;

use self::client::{BlobReader, Remote};
use self::config::{ConfigError, Endpoint, RegistryConfig};
use super::digest::Digest;
use super::oci::{DocumentError, Platform};
use super::reference::Reference;
use super::source::{LayerSource, ResolvedImage, SourceLayer};
use super::store::{Loaded, Store, StoreError};

/// Layers downloaded at once (Docker's default for max-concurrent-downloads).
const CONCURRENT_LAYERS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{op} {origin}: {source}")]
    Registry {
        origin: String,
        op: &'static str,
        source: oci_client::errors::OciDistributionError,
    },
    #[error(
        "{origin}: the registry refused access (HTTP 401{}); set PETRI_REGISTRY_USERNAME and \
         PETRI_REGISTRY_PASSWORD, or log in so that ~/.docker/config.json has an `auths` entry",
        if *.with_credentials { ", credentials refused" } else { ", no credentials given" }
    )]
    Unauthorized { origin: String, with_credentials: bool },
    #[error("{origin}: {what}: {source}")]
    Document {
        origin: String,
        what: String,
        source: DocumentError,
    },
    #[error("{origin}: {what} does not match what was asked for: {detail}")]
    Verify {
        origin: String,
        what: String,
        detail: String,
    },
    #[error("{origin}: {detail}")]
    Invalid { origin: String, detail: String },
    #[error("no image for platform {wanted} in {origin}; available: {available}")]
    NoPlatform {
        origin: String,
        wanted: Platform,
        available: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error("start the download runtime: {0}")]
    Runtime(std::io::Error),
    /// Every endpoint failed; the errors of the mirrors tried first are listed.
    #[error("{last}{}", tried.iter().map(|t| format!("\n  (tried first: {t})")).collect::<String>())]
    AllFailed { last: Box<PullError>, tried: Vec<String> },
}

impl From<StoreError> for PullError {
    fn from(e: StoreError) -> Self {
        PullError::Store(Box::new(e))
    }
}

/// What a pull reports as it goes; the CLI draws progress bars from it.
pub trait PullProgress: Send + Sync {
    /// The image is resolved; its layers are listed with whether the store has them.
    fn resolved(&self, _origin: &str, _manifest: &Digest, _layers: &[(Digest, u64, bool)]) {}
    fn layer_bytes(&self, _layer: &Digest, _n: u64) {}
    fn layer_retry(&self, _layer: &Digest, _error: &str) {}
    fn finished(&self) {}
}

/// Reports nothing.
pub struct Silent;
impl PullProgress for Silent {}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    /// Plain http even for a registry that is not on loopback.
    pub insecure: bool,
    pub config: RegistryConfig,
}

/// Pulls `reference` into `store`, names it by its tag (an image pulled by digest gets
/// no name), and returns what was stored.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: Arc<dyn PullProgress>,
) -> Result<Loaded, PullError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("petri-pull")
        .enable_all()
        .build()
        .map_err(PullError::Runtime)?;
    let result = (|| {
        let (remote, resolved) = runtime.block_on(resolve(reference, opts))?;
        let layers: Vec<(Digest, u64, bool)> = resolved
            .layers
            .iter()
            .zip(Digest::chain_ids(&resolved.config.rootfs.diff_ids))
            .map(|(l, chain)| {
                let digest = l.expect.digest.clone().expect("registry layers have digests");
                (digest, l.expect.size.unwrap_or(0), store.has_layer(&chain))
            })
            .collect();
        let manifest = &resolved.manifest.as_ref().expect("registry images have manifests").0;
        progress.resolved(remote.origin(), manifest, &layers);
        let source = RegistryLayers {
            runtime: runtime.handle().clone(),
            remote: Arc::new(remote),
            progress: progress.clone(),
        };
        let names = if reference.digest.is_none() {
            vec![reference.clone()]
        } else {
            Vec::new()
        };
        Ok(store.load_resolved(resolved, &source, Some(names))?)
    })();
    progress.finished();
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

/// Tries each endpoint (the mirrors, then the registry itself) until one resolves.
async fn resolve(reference: &Reference, opts: &PullOptions) -> Result<(Remote, ResolvedImage), PullError> {
    let mut mirrors = opts.config.endpoints(&reference.registry, opts.insecure);
    let own = mirrors.pop().expect("endpoints() ends with the registry itself");
    let mut tried = Vec::new();
    for mirror in mirrors {
        match resolve_at(reference, &mirror, opts).await {
            Ok(found) => return Ok(found),
            Err(e) => {
                tracing::warn!(mirror = %mirror.host, error = %e, "mirror failed; trying the next endpoint");
                tried.push(e.to_string());
            }
        }
    }
    resolve_at(reference, &own, opts).await.map_err(|e| {
        if tried.is_empty() {
            e
        } else {
            PullError::AllFailed {
                last: Box::new(e),
                tried,
            }
        }
    })
}

async fn resolve_at(
    reference: &Reference,
    endpoint: &Endpoint,
    opts: &PullOptions,
) -> Result<(Remote, ResolvedImage), PullError> {
    let remote = Remote::connect(reference, endpoint, config::credentials(&endpoint.host)?).await?;
    let resolved = remote.resolve(reference, &opts.platform).await?;
    Ok((remote, resolved))
}

/// The store's view of a resolved remote image: one streaming reader per layer.
struct RegistryLayers {
    runtime: Handle,
    remote: Arc<Remote>,
    progress: Arc<dyn PullProgress>,
}

impl LayerSource for RegistryLayers {
    fn origin(&self) -> String {
        self.remote.origin().to_string()
    }

    fn open_layer(
        &self,
        layer: &SourceLayer,
    ) -> Result<Box<dyn Read + Send>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Box::new(BlobReader::new(
            self.runtime.clone(),
            self.remote.clone(),
            layer,
            self.progress.clone(),
        )))
    }

    fn parallelism(&self) -> usize {
        CONCURRENT_LAYERS
    }
}
