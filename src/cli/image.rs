//! `petri image load|ls|inspect|rm`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;

use super::printer::{human_size, Printer};
use super::progress::PullBars;
use crate::image::digest::Digest;
use crate::image::oci::{ContainerConfig, Platform};
use crate::image::reference::{ImageRef, Reference};
use crate::image::registry::{self, config::RegistryConfig, PullOptions};
use crate::image::source::Source;
use crate::image::store::{ImageRecord, LayerRecord, Loaded, Store};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry: `petri image pull 127.0.0.1:5000/team/app:v1`.
    /// Loopback registries are reached over plain http; mirrors for Docker Hub come from
    /// ROOT/config.toml or PETRI_REGISTRY_MIRROR, credentials from PETRI_REGISTRY_USERNAME
    /// and PETRI_REGISTRY_PASSWORD or ~/.docker/config.json.
    Pull {
        reference: String,
        /// Use plain http for this registry even though it is not on loopback.
        #[arg(long)]
        insecure: bool,
        /// Which image of a multi-platform index (default: this machine's).
        #[arg(long)]
        platform: Option<Platform>,
    },
    /// Load an image from an OCI layout directory, an oci-archive or a docker-archive
    /// (`docker save`), or a direct reference (oci:DIR[:TAG], oci-archive:FILE,
    /// docker-archive:FILE).
    Load {
        path: String,
        /// Name the image NAME instead of what the source calls it.
        #[arg(long)]
        tag: Option<String>,
        /// Which image of a multi-platform index (default: this machine's).
        #[arg(long)]
        platform: Option<Platform>,
    },
    /// List images: NAME, DIGEST, SIZE, CREATED.
    #[command(alias = "list")]
    Ls,
    /// Show an image's config and layers.
    Inspect {
        reference: String,
        #[arg(long)]
        platform: Option<Platform>,
    },
    /// Remove images (a name, or every name of an image given by digest), and every
    /// layer no other image uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
}

pub fn run(cmd: ImageCommand, root: &Path, printer: &Printer) -> anyhow::Result<i32> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    match cmd {
        ImageCommand::Pull {
            reference,
            insecure,
            platform,
        } => pull(&store, &reference, insecure, platform, printer),
        ImageCommand::Load { path, tag, platform } => load(&store, &path, tag, platform, printer),
        ImageCommand::Ls => list(&store, printer),
        ImageCommand::Inspect { reference, platform } => inspect(&store, &reference, platform, printer),
        ImageCommand::Rm { references } => remove(&store, &references, printer),
    }?;
    Ok(0)
}

fn load(
    store: &Store,
    path: &str,
    tag: Option<String>,
    platform: Option<Platform>,
    printer: &Printer,
) -> anyhow::Result<()> {
    let platform = platform.unwrap_or_else(Platform::host);
    let names = tag
        .map(|t| t.parse::<Reference>().map(|r| vec![r]))
        .transpose()
        .context("--tag")?;
    let (source, source_tag) = match path.parse::<ImageRef>() {
        Ok(direct @ (ImageRef::OciDir { .. } | ImageRef::OciArchive(_) | ImageRef::DockerArchive(_))) => {
            Source::open(&direct, &store.scratch_dir())?
        }
        _ => (Source::detect(&PathBuf::from(path), &store.scratch_dir())?, None),
    };
    let loaded = store
        .load(&source, source_tag.as_deref(), names, &platform)
        .with_context(|| format!("loading {path}"))?;
    if printer.is_json() {
        return printer.json(&loaded);
    }
    printer.note(&format!(
        "{} layers unpacked, {} already in the store",
        loaded.layers_unpacked, loaded.layers_reused
    ));
    if loaded.names.is_empty() {
        printer.line(&format!("Loaded image: {}", loaded.image.digest))?;
    }
    for name in &loaded.names {
        printer.line(&format!("Loaded image: {name}"))?;
    }
    Ok(())
}

fn pull(
    store: &Store,
    reference: &str,
    insecure: bool,
    platform: Option<Platform>,
    printer: &Printer,
) -> anyhow::Result<()> {
    let reference: Reference = reference.parse()?;
    let loaded = pull_reference(
        store,
        &reference,
        insecure,
        platform.unwrap_or_else(Platform::host),
        printer,
    )?;
    if printer.is_json() {
        return printer.json(&loaded);
    }
    printer.line(&format!("Pulled {reference}: {}", loaded.image.digest))
}

/// Pulls `reference` with the root's registry settings, drawing progress bars unless
/// the output is quiet or JSON. Also `run`'s on-demand pull.
pub(super) fn pull_reference(
    store: &Store,
    reference: &Reference,
    insecure: bool,
    platform: Platform,
    printer: &Printer,
) -> anyhow::Result<Loaded> {
    let opts = PullOptions {
        platform,
        insecure,
        config: RegistryConfig::load(store.root())?,
    };
    let bars = std::sync::Arc::new(PullBars::new(printer.shows_progress()));
    let loaded =
        registry::pull(store, reference, &opts, bars).with_context(|| format!("pulling {}", reference.canonical()))?;
    printer.note(&format!(
        "{} layers downloaded, {} already in the store",
        loaded.layers_unpacked, loaded.layers_reused
    ));
    Ok(loaded)
}

#[derive(Serialize)]
struct ListEntry {
    name: Option<String>,
    names: Vec<String>,
    digest: Digest,
    size: u64,
    created: Option<String>,
    platform: String,
}

fn list(store: &Store, printer: &Printer) -> anyhow::Result<()> {
    let images = store.list()?;
    let entries: Vec<ListEntry> = images
        .into_iter()
        .map(|(img, names)| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            ListEntry {
                name: names.first().cloned(),
                size: img.size(),
                digest: img.digest,
                created: img.created,
                platform: img.platform,
                names,
            }
        })
        .collect();
    if printer.is_json() {
        return printer.json(&entries);
    }
    let mut rows = Vec::new();
    for e in &entries {
        let shown = if e.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            e.names.clone()
        };
        for name in shown {
            rows.push(vec![
                name,
                e.digest.short().to_string(),
                human_size(e.size),
                e.created.clone().unwrap_or_default(),
            ]);
        }
    }
    printer.table(&["NAME", "DIGEST", "SIZE", "CREATED"], rows)
}

/// `image inspect` output: Docker's config field names, so scripts written for
/// `docker inspect` find what they expect.
#[derive(Serialize)]
struct Inspected {
    digest: Digest,
    names: Vec<String>,
    config_digest: Digest,
    platform: String,
    created: Option<String>,
    size: u64,
    config: ContainerConfig,
    layers: Vec<LayerRecord>,
}

fn inspect(store: &Store, query: &str, platform: Option<Platform>, printer: &Printer) -> anyhow::Result<()> {
    let platform = platform.unwrap_or_else(Platform::host);
    let (image, names): (ImageRecord, Vec<Reference>) = store.resolve(query, &platform)?;
    let config = store.config(&image)?.config.unwrap_or_default();
    printer.json(&Inspected {
        names: names.iter().map(|n| n.to_string()).collect(),
        config_digest: image.config_digest.clone(),
        platform: image.platform.clone(),
        created: image.created.clone(),
        size: image.size(),
        digest: image.digest,
        config,
        layers: image.layers,
    })
}

fn remove(store: &Store, queries: &[String], printer: &Printer) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for q in queries {
        // A direct source names the image it holds: find (or load) that, remove it by digest.
        let target = match q.parse::<ImageRef>() {
            Ok(ImageRef::Named(_)) | Err(_) => q.clone(),
            Ok(_) => store.resolve(q, &Platform::host())?.0.digest.to_string(),
        };
        let removed = store.remove(&target).with_context(|| format!("removing {q}"))?;
        for n in &removed.untagged {
            printer.line(&format!(
                "Untagged: {}",
                n.parse::<Reference>().map(|r| r.to_string()).unwrap_or(n.clone())
            ))?;
        }
        for d in &removed.deleted {
            printer.line(&format!("Deleted: {d}"))?;
        }
        all.push(removed);
    }
    if printer.is_json() {
        printer.json(&all)?;
    }
    Ok(())
}
