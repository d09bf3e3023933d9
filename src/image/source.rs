//! Image sources on disk: OCI image layout directories, oci-archive tars and
//! docker-archive tars (`docker save`), read through one small "named files" view.
//!
//! A source resolves to one image for one platform: the verified config, the manifest
//! bytes when the source has one, and per layer what it must hash to. Layers are opened
//! later, one reader each, so the store can unpack them in parallel. Archives are never
//! extracted: a single scan records where each member's bytes lie, and each blob is read
//! in place (a gzip- or zstd-compressed archive is first decompressed to a scratch file).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::digest::{Digest, HashingReader};
use super::layer::LayerExpect;
use super::oci::{media, Compression, Descriptor, Document, DocumentError, ImageConfig, Platform, OCI_LAYOUT_VERSION};
use super::reference::{valid_tag, ImageRef, Reference};

/// Manifests, indexes and configs larger than this are refused rather than read.
const MAX_DOCUMENT: u64 = 8 << 20;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {what} is missing from the source")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: {what}: {source}")]
    Document {
        path: PathBuf,
        what: String,
        source: DocumentError,
    },
    #[error("{path}: {what} does not match its descriptor: {detail}")]
    Verify {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("no image for platform {wanted} in {path}; available: {available}")]
    NoPlatform {
        path: PathBuf,
        wanted: Platform,
        available: String,
    },
    #[error("{path} is not an OCI image layout, oci-archive or docker-archive")]
    Unrecognised { path: PathBuf },
}

/// One image, resolved and verified down to its config.
#[derive(Debug)]
pub struct ResolvedImage {
    /// Absent for docker-archive, whose manifest petri writes itself once the layers'
    /// sizes are known.
    pub manifest: Option<(Digest, Vec<u8>)>,
    pub config_digest: Digest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
    pub layers: Vec<SourceLayer>,
    /// The names the source gives the image (ref.name annotation, RepoTags).
    pub names: Vec<Reference>,
}

#[derive(Debug, Clone)]
pub struct SourceLayer {
    pub member: String,
    pub media_type: String,
    pub expect: LayerExpect,
}

/// Where the store takes the layers of a resolved image from, one reader per layer.
pub trait LayerSource: Sync {
    /// Names the source in errors: a path, or a registry repository.
    fn origin(&self) -> String;
    /// Opens a layer's blob for streaming.
    fn open_layer(&self, layer: &SourceLayer)
        -> Result<Box<dyn Read + Send>, Box<dyn std::error::Error + Send + Sync>>;
    /// How many layers to unpack at once.
    fn parallelism(&self) -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// An opened source: a layout directory or an indexed archive.
pub struct Source {
    path: PathBuf,
    files: Files,
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OciLayout,
    DockerArchive,
}

enum Files {
    Dir(PathBuf),
    Archive {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
        _scratch: Option<tempfile::TempPath>,
    },
}

impl Source {
    /// Opens `r`, which must be a direct source (not a store name). `scratch` is where a
    /// compressed archive may be decompressed to.
    pub fn open(r: &ImageRef, scratch: &Path) -> Result<(Source, Option<String>), SourceError> {
        match r {
            ImageRef::OciDir { path, tag } => Ok((Source::layout_dir(path)?, tag.clone())),
            ImageRef::OciArchive(path) => Ok((Source::archive(path, Some(Format::OciLayout), scratch)?, None)),
            ImageRef::DockerArchive(path) => Ok((Source::archive(path, Some(Format::DockerArchive), scratch)?, None)),
            ImageRef::Named(_) => unreachable!("named references are resolved by the store"),
        }
    }

    /// Opens a path given to `image load`, whatever its format.
    pub fn detect(path: &Path, scratch: &Path) -> Result<Source, SourceError> {
        let meta = std::fs::metadata(path).map_err(|e| io_err("stat", path, e))?;
        if meta.is_dir() {
            Source::layout_dir(path)
        } else {
            Source::archive(path, None, scratch)
        }
    }

    fn layout_dir(path: &Path) -> Result<Source, SourceError> {
        let source = Source {
            path: path.to_path_buf(),
            files: Files::Dir(path.to_path_buf()),
            format: Format::OciLayout,
        };
        source.check_layout()?;
        Ok(source)
    }

    fn archive(path: &Path, format: Option<Format>, scratch: &Path) -> Result<Source, SourceError> {
        let (file, scratch_file) = decompressed(path, scratch)?;
        let members = index_archive(&file).map_err(|e| io_err("read archive", path, e))?;
        let format = match format {
            Some(f) => f,
            None if members.contains_key("manifest.json") => Format::DockerArchive,
            None if members.contains_key("index.json") => Format::OciLayout,
            None => return Err(SourceError::Unrecognised { path: path.into() }),
        };
        let source = Source {
            path: path.to_path_buf(),
            files: Files::Archive {
                file,
                members,
                _scratch: scratch_file,
            },
            format,
        };
        if format == Format::OciLayout {
            source.check_layout()?;
        }
        Ok(source)
    }

    fn check_layout(&self) -> Result<(), SourceError> {
        #[derive(Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let bytes = self.read_member("oci-layout", "the oci-layout file")?;
        let layout: Layout = serde_json::from_slice(&bytes).map_err(|e| self.invalid(&format!("oci-layout: {e}")))?;
        if layout.version != OCI_LAYOUT_VERSION {
            return Err(self.invalid(&format!("unsupported imageLayoutVersion {:?}", layout.version)));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Picks the image (by `tag` when given, else the only one) for `platform`, and
    /// verifies its manifest and config.
    pub fn resolve(&self, tag: Option<&str>, platform: &Platform) -> Result<ResolvedImage, SourceError> {
        match self.format {
            Format::OciLayout => self.resolve_layout(tag, platform),
            Format::DockerArchive => self.resolve_docker(tag),
        }
    }

    fn resolve_layout(&self, tag: Option<&str>, platform: &Platform) -> Result<ResolvedImage, SourceError> {
        let top = self.read_member("index.json", "index.json")?;
        let Document::Index(index) = self.parse(&top, None, "index.json")? else {
            return Err(self.invalid("index.json is a manifest, not an index"));
        };
        let tagged: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| tag.is_none_or(|t| d.annotations.get(REF_NAME).map(String::as_str) == Some(t)))
            .collect();
        let chosen = match (tagged.as_slice(), tag) {
            ([], Some(t)) => {
                return Err(self.invalid(&format!(
                    "no image tagged {t:?}; tags: {}",
                    layout_tags(&index.manifests)
                )))
            }
            ([], None) => return Err(self.invalid("index.json lists no image")),
            ([one], _) => (*one).clone(),
            (many, _) if many.iter().all(|d| d.platform.is_some()) => self.pick_platform(many, platform)?,
            _ => {
                return Err(self.invalid(&format!(
                    "the layout holds several images; name one as oci:DIR:TAG (tags: {})",
                    layout_tags(&index.manifests)
                )))
            }
        };
        let ref_name = chosen.annotations.get(REF_NAME).cloned();
        let (manifest_digest, manifest_bytes) = self.descend(chosen, platform)?;
        let Document::Manifest(manifest) = self.parse(&manifest_bytes, None, "manifest")? else {
            unreachable!("descend returns manifests only");
        };
        if !media::is_config(&manifest.config.media_type) {
            return Err(self.invalid(&format!(
                "config has unsupported media type {:?}",
                manifest.config.media_type
            )));
        }
        let config_bytes = self.read_blob(&manifest.config, "config")?;
        let config = self.parse_config(&config_bytes)?;
        let layers = self.layout_layers(&manifest.layers, &config)?;
        Ok(ResolvedImage {
            manifest: Some((manifest_digest, manifest_bytes)),
            config_digest: manifest.config.digest.clone(),
            config_bytes,
            config,
            layers,
            names: ref_name
                .and_then(|n| self.name_from_annotation(&n))
                .into_iter()
                .collect(),
        })
    }

    /// Follows indexes down to one manifest for `platform`; returns its digest and bytes.
    fn descend(&self, mut desc: Descriptor, platform: &Platform) -> Result<(Digest, Vec<u8>), SourceError> {
        for _ in 0..4 {
            let bytes = self.read_blob(&desc, "manifest")?;
            match self.parse(&bytes, Some(&desc.media_type), "manifest")? {
                Document::Manifest(_) => return Ok((desc.digest, bytes)),
                Document::Index(index) => {
                    let all: Vec<&Descriptor> = index.manifests.iter().collect();
                    desc = self.pick_platform(&all, platform)?;
                }
            }
        }
        Err(self.invalid("indexes nested more than 4 deep"))
    }

    fn pick_platform(&self, candidates: &[&Descriptor], platform: &Platform) -> Result<Descriptor, SourceError> {
        platform
            .pick(candidates)
            .cloned()
            .map_err(|available| SourceError::NoPlatform {
                path: self.path.clone(),
                wanted: platform.clone(),
                available,
            })
    }

    fn layout_layers(&self, descs: &[Descriptor], config: &ImageConfig) -> Result<Vec<SourceLayer>, SourceError> {
        manifest_layers(descs, config, blob_member).map_err(|detail| self.invalid(&detail))
    }

    fn resolve_docker(&self, tag: Option<&str>) -> Result<ResolvedImage, SourceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let bytes = self.read_member("manifest.json", "manifest.json")?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid(&format!("manifest.json: {e}")))?;
        let entry = match (entries.as_slice(), tag) {
            ([one], None) => one,
            (all, _) => {
                let wanted = tag.unwrap_or("");
                all.iter()
                    .find(|e| e.repo_tags.iter().flatten().any(|t| t == wanted))
                    .ok_or_else(|| {
                        self.invalid(&format!(
                            "manifest.json lists {} images; none is tagged {wanted:?}",
                            all.len()
                        ))
                    })?
            }
        };
        let config_member = normalise_member(&entry.config);
        let config_bytes = self.read_member(&config_member, "the image config")?;
        let config_digest = Digest::of(&config_bytes);
        // Docker names the config after its digest; when it does, hold it to that.
        let stem = config_member.rsplit('/').next().unwrap_or("").trim_end_matches(".json");
        if stem.len() == 64 && stem != config_digest.hex() {
            return Err(SourceError::Verify {
                path: self.path.clone(),
                what: format!("config {config_member}"),
                detail: format!("its contents hash to {config_digest}"),
            });
        }
        let config = self.parse_config(&config_bytes)?;
        self.check_layer_count(entry.layers.len(), &config)?;
        let layers = entry
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(member, diff_id)| SourceLayer {
                member: normalise_member(member),
                media_type: media::OCI_LAYER.into(),
                expect: LayerExpect {
                    digest: None,
                    size: None,
                    compression: None,
                    diff_id: diff_id.clone(),
                },
            })
            .collect();
        let names = entry
            .repo_tags
            .iter()
            .flatten()
            .filter_map(|t| t.parse().ok())
            .collect();
        Ok(ResolvedImage {
            manifest: None,
            config_digest,
            config_bytes,
            config,
            layers,
            names,
        })
    }

    fn check_layer_count(&self, layers: usize, config: &ImageConfig) -> Result<(), SourceError> {
        layer_count_matches(layers, config).map_err(|detail| self.invalid(&detail))
    }

    fn parse_config(&self, bytes: &[u8]) -> Result<ImageConfig, SourceError> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(&format!("image config: {e}")))
    }

    fn parse(&self, bytes: &[u8], declared: Option<&str>, what: &str) -> Result<Document, SourceError> {
        Document::parse(bytes, declared).map_err(|source| SourceError::Document {
            path: self.path.clone(),
            what: what.into(),
            source,
        })
    }

    /// A ref.name is either a full reference ("busybox:latest", "registry/app:v1") or,
    /// as skopeo writes it, just a tag, which then names the image after the source file.
    fn name_from_annotation(&self, name: &str) -> Option<Reference> {
        if name.contains([':', '/']) {
            return name.parse().ok();
        }
        let stem = self.path.file_name()?.to_str()?;
        let stem = stem.split('.').next()?.to_ascii_lowercase();
        if valid_tag(name) {
            format!("{stem}:{name}").parse().ok()
        } else {
            None
        }
    }

    /// Reads a blob named by a descriptor, checking its size and digest.
    fn read_blob(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, SourceError> {
        if desc.size > MAX_DOCUMENT {
            return Err(self.invalid(&format!(
                "{what} {} is {} bytes, over the {MAX_DOCUMENT} limit",
                desc.digest, desc.size
            )));
        }
        let member = blob_member(&desc.digest);
        let mut reader = HashingReader::new(self.open_member(&member)?, Some(desc.size));
        let mut bytes = Vec::with_capacity(desc.size as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| self.verify_err(what, &desc.digest, e.to_string()))?;
        let (digest, size) = reader
            .finish()
            .map_err(|e| io_err("read", &self.path.join(&member), e))?;
        if size != desc.size {
            return Err(self.verify_err(
                what,
                &desc.digest,
                format!("size is {size}, descriptor says {}", desc.size),
            ));
        }
        if digest != desc.digest {
            return Err(self.verify_err(what, &desc.digest, format!("contents hash to {digest}")));
        }
        Ok(bytes)
    }

    fn verify_err(&self, what: &str, digest: &Digest, detail: String) -> SourceError {
        SourceError::Verify {
            path: self.path.clone(),
            what: format!("{what} {digest}"),
            detail,
        }
    }

    fn read_member(&self, member: &str, what: &str) -> Result<Vec<u8>, SourceError> {
        let mut bytes = Vec::new();
        self.open_member(member)?
            .take(MAX_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err("read", &self.path.join(member), e))?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(self.invalid(&format!("{what} is over {MAX_DOCUMENT} bytes")));
        }
        Ok(bytes)
    }

    fn open_member(&self, member: &str) -> Result<Box<dyn Read + Send>, SourceError> {
        let missing = || SourceError::Missing {
            path: self.path.clone(),
            what: member.to_string(),
        };
        match &self.files {
            Files::Dir(dir) => {
                let path = dir.join(member);
                match File::open(&path) {
                    Ok(f) => Ok(Box::new(f)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
                    Err(e) => Err(io_err("open", &path, e)),
                }
            }
            Files::Archive { file, members, .. } => {
                let &(offset, size) = members.get(member).ok_or_else(missing)?;
                let mut f = File::open(file).map_err(|e| io_err("open", file, e))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| io_err("seek in", file, e))?;
                Ok(Box::new(f.take(size)))
            }
        }
    }

    fn invalid(&self, detail: &str) -> SourceError {
        SourceError::Invalid {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }
}

impl LayerSource for Source {
    fn origin(&self) -> String {
        self.path.display().to_string()
    }

    fn open_layer(
        &self,
        layer: &SourceLayer,
    ) -> Result<Box<dyn Read + Send>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.open_member(&layer.member)?)
    }
}

/// The layers a manifest lists, each with the diff_id the config gives it; `member`
/// names where a blob is read from. The error says what is wrong; the caller adds where.
pub fn manifest_layers(
    descs: &[Descriptor],
    config: &ImageConfig,
    member: impl Fn(&Digest) -> String,
) -> Result<Vec<SourceLayer>, String> {
    layer_count_matches(descs.len(), config)?;
    descs
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff_id)| {
            let compression = Compression::of_layer_media_type(&d.media_type)
                .ok_or_else(|| format!("layer {} has unsupported media type {:?}", d.digest, d.media_type))?;
            Ok(SourceLayer {
                member: member(&d.digest),
                media_type: d.media_type.clone(),
                expect: LayerExpect {
                    digest: Some(d.digest.clone()),
                    size: Some(d.size),
                    compression: Some(compression),
                    diff_id: diff_id.clone(),
                },
            })
        })
        .collect()
}

fn layer_count_matches(layers: usize, config: &ImageConfig) -> Result<(), String> {
    match config.rootfs.diff_ids.len() {
        n if n == layers => Ok(()),
        n => Err(format!(
            "the image lists {layers} layers but its config has {n} diff_ids"
        )),
    }
}

fn layout_tags(descs: &[Descriptor]) -> String {
    let tags: Vec<&str> = descs
        .iter()
        .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
        .collect();
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn normalise_member(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Returns the archive as a plain tar: the file itself, or a scratch copy decompressed
/// when it is gzip or zstd (as `docker save | gzip` makes).
fn decompressed(path: &Path, scratch: &Path) -> Result<(PathBuf, Option<tempfile::TempPath>), SourceError> {
    let mut f = File::open(path).map_err(|e| io_err("open", path, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| io_err("read", path, e))?;
    f.rewind().map_err(|e| io_err("seek in", path, e))?;
    let mut reader: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f))),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| io_err("read", path, e))?),
        _ => return Ok((path.to_path_buf(), None)),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix("archive-")
        .tempfile_in(scratch)
        .map_err(|e| io_err("create scratch file in", scratch, e))?;
    io::copy(&mut reader, tmp.as_file_mut()).map_err(|e| io_err("decompress", path, e))?;
    let tmp = tmp.into_temp_path();
    Ok((tmp.to_path_buf(), Some(tmp)))
}

/// Records where each member's data lies in an uncompressed tar. Symlinked members (as
/// `docker save` writes for repeated layers) point at their target's bytes.
fn index_archive(path: &Path) -> io::Result<HashMap<String, (u64, u64)>> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut members = HashMap::new();
    let mut links = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let name = normalise_member(&String::from_utf8_lossy(&entry.path_bytes()));
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                members.insert(name, (entry.raw_file_position(), entry.size()));
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()).into_owned();
                let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let resolved = match entry.header().entry_type() {
                    tar::EntryType::Symlink => normalise_member(&format!("{dir}/{target}")),
                    _ => normalise_member(&target),
                };
                links.push((name, resolved));
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(&loc) = members.get(&target) {
            members.insert(name, loc);
        }
    }
    Ok(members)
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> SourceError {
    SourceError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_normalised() {
        assert_eq!(normalise_member("./abc/layer.tar"), "abc/layer.tar");
        assert_eq!(normalise_member("abc/../def/layer.tar"), "def/layer.tar");
        assert_eq!(normalise_member("../../x"), "x");
    }
}
