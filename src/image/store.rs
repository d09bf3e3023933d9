//! The image store under `--root`: content-addressed blobs, one unpacked directory per
//! layer keyed by ChainID and shared by every image that has it, and a catalog of images
//! and their names.
//!
//! ```text
//! ROOT/blobs/sha256/HEX        manifests and configs, verified, written once
//! ROOT/layers/CHAINHEX/diff/   a layer in overlayfs form (the unit an overlay stacks)
//! ROOT/layers/CHAINHEX/layer.json
//! ROOT/catalog.json            images by manifest digest, and names -> digest
//! ROOT/tmp/                    staging; nothing here is ever read as a result
//! ROOT/locks/                  flock files
//! ```
//!
//! Several petri processes may use one root at once. Everything becomes visible by an
//! atomic rename from `tmp/`, so a half-written blob or layer is never seen; a per-layer
//! lock makes the second loader of a layer wait and reuse the first one's work; the
//! catalog is read-modified-written under its own lock; loads hold `store.lock` shared and
//! `image rm` holds it exclusively, so garbage collection never removes a layer that a
//! load in flight is about to reference.
//!
//! Compressed layer blobs are not kept: the unpacked directory is what petri runs, and
//! keeping both would double the disk used. The manifest still records their digests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::layer::{self, LayerError};
use super::lock::FileLock;
use super::oci::{media, Descriptor, ImageConfig, Manifest, Platform};
use super::reference::{ImageRef, Reference, ReferenceError};
use super::source::{LayerSource, ResolvedImage, Source, SourceError, SourceLayer};
use super::unpack::UnpackOptions;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("layer {layer} of {origin}: {error}")]
    Layer {
        layer: String,
        origin: String,
        #[source]
        error: LayerError,
    },
    #[error("layer {layer} of {origin}: {error}")]
    Open {
        layer: String,
        origin: String,
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("{0:?} matches several images; use more of the digest")]
    Ambiguous(String),
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// One image in the store, keyed by its manifest digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub digest: Digest,
    pub config_digest: Digest,
    pub platform: String,
    #[serde(default)]
    pub created: Option<String>,
    pub loaded_at: String,
    pub layers: Vec<LayerRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub diff_size: u64,
}

impl ImageRecord {
    /// The layers as overlay lower directories: relative to the store's layers
    /// directory, top layer first.
    pub fn lower_dirs(&self) -> Vec<String> {
        self.layers
            .iter()
            .rev()
            .map(|l| format!("{}/diff", l.chain_id.hex()))
            .collect()
    }

    /// Uncompressed size of all layers, as `docker images` reports it.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.diff_size).sum()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalog {
    images: BTreeMap<Digest, ImageRecord>,
    /// Canonical name ("docker.io/library/busybox:latest") -> manifest digest.
    tags: BTreeMap<String, Digest>,
}

impl Catalog {
    /// Finds an image by name (then also returns the canonical name), by `name@digest`,
    /// by digest, or by a unique digest prefix of at least 12 hex characters.
    fn lookup(&self, query: &str) -> Result<Option<(Digest, Option<String>)>, StoreError> {
        if let Ok(ImageRef::Named(r)) = query.parse::<ImageRef>() {
            match &r.digest {
                Some(d) => return Ok(self.images.contains_key(d).then(|| (d.clone(), None))),
                None => {
                    if let Some(d) = self.tags.get(&r.canonical()) {
                        return Ok(Some((d.clone(), Some(r.canonical()))));
                    }
                }
            }
        }
        let prefix = query.strip_prefix("sha256:").unwrap_or(query);
        if prefix.len() < 12 || !prefix.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Ok(None);
        }
        let matches: Vec<&Digest> = self.images.keys().filter(|d| d.hex().starts_with(prefix)).collect();
        match matches.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(((*one).clone(), None))),
            _ => Err(StoreError::Ambiguous(query.into())),
        }
    }

    fn names_of(&self, digest: &Digest) -> Vec<Reference> {
        self.tags
            .iter()
            .filter(|(_, d)| *d == digest)
            .filter_map(|(n, _)| n.parse().ok())
            .collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerMeta {
    chain_id: Digest,
    diff_id: Digest,
    diff_size: u64,
    entries: u64,
}

/// What `load` did.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    pub image: ImageRecord,
    pub names: Vec<Reference>,
    pub layers_unpacked: usize,
    pub layers_reused: usize,
}

/// What `remove` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub deleted: Vec<Digest>,
    pub layers_deleted: usize,
}

pub struct Store {
    root: PathBuf,
    unpack: UnpackOptions,
}

impl Store {
    /// Opens (creating if needed) the store under `root`.
    ///
    /// `layers` is made last, so a store that has it has the rest: opening an existing
    /// store (every `petri run`) is one stat, not a failing mkdir per directory.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let layers = root.join("layers");
        if !layers.is_dir() {
            for sub in ["blobs/sha256", "tmp", "locks"] {
                let dir = root.join(sub);
                fs::create_dir_all(&dir).map_err(|e| io_err("create directory", &dir, e))?;
            }
            // Layers hold the images' setuid binaries and device nodes: only root may reach them.
            match fs::create_dir(&layers) {
                Ok(()) => {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&layers, fs::Permissions::from_mode(0o700))
                        .map_err(|e| io_err("chmod", &layers, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create directory", &layers, e)),
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            unpack: UnpackOptions::for_current_user(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding a layer's files, to be stacked as an overlay lowerdir.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.layer_path(chain_id).join("diff")
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Loads the image `tag` (or the only one) of `source` for `platform`, naming it
    /// `names` (or the names the source gives).
    pub fn load(
        &self,
        source: &Source,
        tag: Option<&str>,
        names: Option<Vec<Reference>>,
        platform: &Platform,
    ) -> Result<Loaded, StoreError> {
        let resolved = source.resolve(tag, platform)?;
        self.load_resolved(resolved, source, names)
    }

    /// Stores an image resolved elsewhere (a directory, an archive, a registry), taking
    /// the layers it lacks from `layers`; names it `names` or the names it came with.
    pub fn load_resolved(
        &self,
        resolved: ResolvedImage,
        layers: &dyn LayerSource,
        names: Option<Vec<Reference>>,
    ) -> Result<Loaded, StoreError> {
        let _store = self.lock_for_load()?;
        let chain = Digest::chain_ids(&resolved.config.rootfs.diff_ids);
        let results = self.ensure_layers(layers, &resolved.layers, &chain)?;
        let layers_unpacked = results.iter().filter(|(_, fresh)| *fresh).count();
        let layers: Vec<LayerRecord> = resolved
            .layers
            .iter()
            .zip(&chain)
            .zip(&results)
            .map(|((l, chain_id), (diff_size, _))| layer_record(l, chain_id, *diff_size))
            .collect();
        let (digest, manifest_bytes) = match &resolved.manifest {
            Some((d, bytes)) => (d.clone(), bytes.clone()),
            None => synthesize_manifest(&resolved, &layers)?,
        };
        self.write_blob(&digest, &manifest_bytes)?;
        self.write_blob(&resolved.config_digest, &resolved.config_bytes)?;
        let cfg = &resolved.config;
        let image = ImageRecord {
            digest: digest.clone(),
            config_digest: resolved.config_digest.clone(),
            platform: Platform {
                os: cfg.os.clone(),
                architecture: cfg.architecture.clone(),
                variant: cfg.variant.clone(),
            }
            .to_string(),
            created: cfg.created.clone(),
            loaded_at: now_rfc3339(),
            layers,
        };
        let names = names.unwrap_or(resolved.names);
        self.update_catalog(|c| {
            c.images.entry(digest.clone()).or_insert_with(|| image.clone());
            for n in &names {
                c.tags.insert(n.canonical(), digest.clone());
            }
            Ok(())
        })?;
        Ok(Loaded {
            layers_reused: image.layers.len() - layers_unpacked,
            image,
            names,
            layers_unpacked,
        })
    }

    /// True when the layer with this ChainID is unpacked in the store.
    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_path(chain_id).exists()
    }

    /// Takes the store lock shared; clears `tmp/` first when no other process is using
    /// the store (leftovers of a killed petri).
    fn lock_for_load(&self) -> Result<FileLock, StoreError> {
        let path = self.root.join("locks/store.lock");
        let lock_err = |e| io_err("lock", &path, e);
        match FileLock::try_exclusive(&path).map_err(lock_err)? {
            Some(lock) => {
                self.clear_scratch()?;
                lock.downgrade().map_err(lock_err)?;
                Ok(lock)
            }
            None => FileLock::shared(&path).map_err(lock_err),
        }
    }

    /// Makes sure every layer is unpacked; returns (diff size, unpacked now) per layer.
    ///
    /// All-or-nothing: missing layers are unpacked side by side (as many at once as
    /// there are cores) into staging, and renamed into `layers/` only once every one of
    /// them has verified, so a refused image leaves nothing behind. The locks of the
    /// missing layers are taken in ChainID order, so two loads sharing layers never
    /// deadlock; a second load of a layer waits, then finds it present.
    fn ensure_layers(
        &self,
        source: &dyn LayerSource,
        layers: &[SourceLayer],
        chain: &[Digest],
    ) -> Result<Vec<(u64, bool)>, StoreError> {
        let mut missing: Vec<usize> = (0..layers.len()).filter(|&i| !self.has_layer(&chain[i])).collect();
        missing.sort_by(|&a, &b| chain[a].cmp(&chain[b]));
        let mut locks = Vec::with_capacity(missing.len());
        for &i in &missing {
            let path = self.root.join("locks").join(format!("layer-{}.lock", chain[i].hex()));
            locks.push(FileLock::exclusive(&path).map_err(|e| io_err("lock", &path, e))?);
        }
        missing.retain(|&i| !self.has_layer(&chain[i]));
        let staged = self.stage_layers(source, layers, chain, &missing)?;
        for (i, staging) in staged {
            let dest = self.layer_path(&chain[i]);
            let from = staging.keep();
            fs::rename(&from, &dest).map_err(|e| {
                let _ = fs::remove_dir_all(&from);
                io_err("rename staged layer to", &dest, e)
            })?;
        }
        drop(locks);
        (0..layers.len())
            .map(|i| {
                let meta = self.layer_meta(&self.layer_path(&chain[i]))?;
                Ok((meta.diff_size, missing.contains(&i)))
            })
            .collect()
    }

    /// Unpacks the layers `which` into staging directories, in parallel.
    fn stage_layers(
        &self,
        source: &dyn LayerSource,
        layers: &[SourceLayer],
        chain: &[Digest],
        which: &[usize],
    ) -> Result<Vec<(usize, tempfile::TempDir)>, StoreError> {
        let workers = source.parallelism().clamp(1, which.len().max(1));
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results = Mutex::new(Vec::with_capacity(which.len()));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= which.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = which[n];
                    let r = self.stage_layer(source, &layers[i], &chain[i]);
                    failed.fetch_or(r.is_err(), Ordering::Relaxed);
                    results.lock().expect("results").push((i, r));
                });
            }
        });
        let mut results = results.into_inner().expect("results");
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(i, r)| r.map(|dir| (i, dir))).collect()
    }

    fn stage_layer(
        &self,
        source: &dyn LayerSource,
        layer: &SourceLayer,
        chain_id: &Digest,
    ) -> Result<tempfile::TempDir, StoreError> {
        let scratch = self.scratch_dir();
        let staging = tempfile::Builder::new()
            .prefix(&format!("layer-{}-", chain_id.short()))
            .tempdir_in(&scratch)
            .map_err(|e| io_err("create staging directory in", &scratch, e))?;
        let diff = staging.path().join("diff");
        fs::create_dir(&diff).map_err(|e| io_err("create directory", &diff, e))?;
        let name = layer
            .expect
            .digest
            .as_ref()
            .unwrap_or(&layer.expect.diff_id)
            .to_string();
        let layer_err = |error| StoreError::Layer {
            layer: name.clone(),
            origin: source.origin(),
            error,
        };
        let blob = source.open_layer(layer).map_err(|error| StoreError::Open {
            layer: name.clone(),
            origin: source.origin(),
            error,
        })?;
        let outcome = layer::apply(blob, &layer.expect, &diff, self.unpack).map_err(layer_err)?;
        let meta = LayerMeta {
            chain_id: chain_id.clone(),
            diff_id: layer.expect.diff_id.clone(),
            diff_size: outcome.diff_size,
            entries: outcome.stats.entries,
        };
        write_json(&staging.path().join("layer.json"), &meta)?;
        Ok(staging)
    }

    fn layer_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    fn layer_meta(&self, dir: &Path) -> Result<LayerMeta, StoreError> {
        let path = dir.join("layer.json");
        let bytes = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            detail: e.to_string(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        self.write_atomic(&path, bytes)
    }

    /// Writes to a scratch file, flushes it to disk, and renames it into place.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let scratch = self.scratch_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&scratch).map_err(|e| io_err("create file in", &scratch, e))?;
        tmp.write_all(bytes).map_err(|e| io_err("write", tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| io_err("sync", tmp.path(), e))?;
        tmp.persist(path).map_err(|e| io_err("rename into", path, e.error))?;
        Ok(())
    }

    /// Reads a stored blob back, checking it still hashes to its name.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
        if Digest::of(&bytes) != *digest {
            return Err(StoreError::Corrupt {
                path,
                detail: "blob does not match its digest".into(),
            });
        }
        Ok(bytes)
    }

    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfig, StoreError> {
        let bytes = self.read_blob(&image.config_digest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.blob_path(&image.config_digest),
            detail: e.to_string(),
        })
    }

    fn read_catalog(&self) -> Result<Catalog, StoreError> {
        let path = self.root.join("catalog.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Catalog::default()),
            Err(e) => Err(io_err("read", &path, e)),
        }
    }

    /// Read-modify-write of the catalog under its lock; nothing is written when `f` fails.
    fn update_catalog<T>(&self, f: impl FnOnce(&mut Catalog) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let lock_path = self.root.join("locks/catalog.lock");
        let _lock = FileLock::exclusive(&lock_path).map_err(|e| io_err("lock", &lock_path, e))?;
        let mut catalog = self.read_catalog()?;
        let out = f(&mut catalog)?;
        let bytes = serde_json::to_vec_pretty(&catalog).expect("catalog serialises");
        self.write_atomic(&self.root.join("catalog.json"), &bytes)?;
        Ok(out)
    }

    /// Every image with its names, newest load first.
    pub fn list(&self) -> Result<Vec<(ImageRecord, Vec<Reference>)>, StoreError> {
        let catalog = self.read_catalog()?;
        let mut out: Vec<_> = catalog
            .images
            .values()
            .map(|img| (img.clone(), catalog.names_of(&img.digest)))
            .collect();
        out.sort_by(|a, b| b.0.loaded_at.cmp(&a.0.loaded_at));
        Ok(out)
    }

    /// Finds an image by name, by digest, or by a digest prefix of 12+ hex characters;
    /// a direct source (`oci:`, `oci-archive:`, `docker-archive:`) is loaded first.
    pub fn resolve(&self, query: &str, platform: &Platform) -> Result<(ImageRecord, Vec<Reference>), StoreError> {
        if let Some(found) = self.find(query)? {
            return Ok(found);
        }
        match query.parse::<ImageRef>()? {
            ImageRef::Named(_) => Err(StoreError::NotFound(query.into())),
            direct => {
                let (source, tag) = Source::open(&direct, &self.scratch_dir())?;
                let loaded = self.load(&source, tag.as_deref(), None, platform)?;
                Ok((loaded.image, loaded.names))
            }
        }
    }

    fn find(&self, query: &str) -> Result<Option<(ImageRecord, Vec<Reference>)>, StoreError> {
        let catalog = self.read_catalog()?;
        Ok(catalog
            .lookup(query)?
            .and_then(|(d, _)| catalog.images.get(&d).map(|img| (img.clone(), catalog.names_of(&d)))))
    }

    /// Removes a name; when it was the image's last name (or the image was named by
    /// digest) the image goes too, with every blob and layer no other image uses.
    pub fn remove(&self, query: &str) -> Result<Removed, StoreError> {
        let store_lock = self.root.join("locks/store.lock");
        let _store = FileLock::exclusive(&store_lock).map_err(|e| io_err("lock", &store_lock, e))?;
        let mut removed = self.update_catalog(|c| {
            let (digest, by_name) = c.lookup(query)?.ok_or_else(|| StoreError::NotFound(query.into()))?;
            let names: Vec<String> = match by_name {
                Some(n) => vec![n],
                None => c
                    .tags
                    .iter()
                    .filter(|(_, d)| **d == digest)
                    .map(|(n, _)| n.clone())
                    .collect(),
            };
            let mut removed = Removed::default();
            for n in names {
                c.tags.remove(&n);
                removed.untagged.push(n);
            }
            if !c.tags.values().any(|d| *d == digest) {
                c.images.remove(&digest);
                removed.deleted.push(digest);
            }
            Ok(removed)
        })?;
        removed.layers_deleted = self.collect_garbage()?;
        Ok(removed)
    }

    /// Deletes blobs and layers no image refers to, and clears scratch space. Runs with
    /// the store lock held exclusively, so no load is in flight.
    fn collect_garbage(&self) -> Result<usize, StoreError> {
        let catalog = self.read_catalog()?;
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        for img in catalog.images.values() {
            blobs.insert(img.digest.hex().to_string());
            blobs.insert(img.config_digest.hex().to_string());
            chains.extend(img.layers.iter().map(|l| l.chain_id.hex().to_string()));
        }
        for name in self.dir_names("blobs/sha256")? {
            if !blobs.contains(&name) {
                let path = self.root.join("blobs/sha256").join(&name);
                fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
            }
        }
        let mut layers_deleted = 0;
        for name in self.dir_names("layers")? {
            // Only ChainID directories are the store's; others (the sandbox's base layer,
            // staging of it) belong to their owners.
            let is_chain = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_chain && !chains.contains(&name) {
                // Out of sight first, so a crash mid-delete leaves no half layer behind.
                let from = self.root.join("layers").join(&name);
                let to = self.scratch_dir().join(format!("deleted-{name}"));
                fs::rename(&from, &to).map_err(|e| io_err("move aside", &from, e))?;
                let _ = fs::remove_file(self.root.join("locks").join(format!("layer-{name}.lock")));
                layers_deleted += 1;
            }
        }
        self.clear_scratch()?;
        Ok(layers_deleted)
    }

    fn clear_scratch(&self) -> Result<(), StoreError> {
        for name in self.dir_names("tmp")? {
            let path = self.scratch_dir().join(name);
            let r = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(|e| io_err("remove", &path, e))?;
        }
        Ok(())
    }

    fn dir_names(&self, sub: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(sub);
        let entries = fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))?;
        entries
            .map(|e| {
                e.map(|e| e.file_name().to_string_lossy().into_owned())
                    .map_err(|e| io_err("list", &dir, e))
            })
            .collect()
    }
}

fn layer_record(l: &SourceLayer, chain_id: &Digest, diff_size: u64) -> LayerRecord {
    // docker-archive names no blob: its layers are recorded as the tar they unpack from.
    let (digest, size) = match (&l.expect.digest, l.expect.size) {
        (Some(d), Some(s)) => (d.clone(), s),
        _ => (l.expect.diff_id.clone(), diff_size),
    };
    LayerRecord {
        digest,
        media_type: l.media_type.clone(),
        size,
        diff_id: l.expect.diff_id.clone(),
        chain_id: chain_id.clone(),
        diff_size,
    }
}

/// The OCI manifest of an image that came without one (docker-archive). Deterministic,
/// so loading the same archive twice gives the same image digest.
fn synthesize_manifest(resolved: &ResolvedImage, layers: &[LayerRecord]) -> Result<(Digest, Vec<u8>), StoreError> {
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: media::OCI_CONFIG.into(),
            digest: resolved.config_digest.clone(),
            size: resolved.config_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                platform: None,
                annotations: BTreeMap::new(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    Ok((Digest::of(&bytes), bytes))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).expect("serialisable");
    fs::write(path, bytes).map_err(|e| io_err("write", path, e))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digest: &Digest) -> ImageRecord {
        ImageRecord {
            digest: digest.clone(),
            config_digest: digest.clone(),
            platform: "linux/amd64".into(),
            created: None,
            loaded_at: String::new(),
            layers: Vec::new(),
        }
    }

    /// Two images whose digests share no prefix, one named busybox:latest.
    fn catalog() -> (Catalog, Digest, Digest) {
        let a: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let b: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let mut c = Catalog::default();
        c.images.insert(a.clone(), image(&a));
        c.images.insert(b.clone(), image(&b));
        c.tags.insert("docker.io/library/busybox:latest".into(), a.clone());
        (c, a, b)
    }

    #[test]
    fn lookup_by_name_digest_and_prefix() {
        let (c, a, b) = catalog();
        let canonical = Some("docker.io/library/busybox:latest".to_string());
        assert_eq!(c.lookup("busybox").unwrap(), Some((a.clone(), canonical.clone())));
        assert_eq!(
            c.lookup("docker.io/library/busybox:latest").unwrap(),
            Some((a.clone(), canonical))
        );
        assert_eq!(c.lookup(&b.to_string()).unwrap(), Some((b.clone(), None)));
        assert_eq!(c.lookup(&format!("busybox@{b}")).unwrap(), Some((b.clone(), None)));
        assert_eq!(c.lookup(&"b".repeat(12)).unwrap(), Some((b, None)));
        assert_eq!(
            c.lookup(&"b".repeat(11)).unwrap(),
            None,
            "prefixes under 12 characters are names"
        );
        assert_eq!(c.lookup("busybox:other").unwrap(), None);
    }

    #[test]
    fn lookup_refuses_ambiguous_prefixes() {
        let (mut c, _, _) = catalog();
        let a2: Digest = format!("sha256:{}b", "a".repeat(63)).parse().unwrap();
        c.images.insert(a2.clone(), image(&a2));
        assert!(matches!(c.lookup(&"a".repeat(12)), Err(StoreError::Ambiguous(_))));
    }
}
