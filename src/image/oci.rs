//! The JSON documents of the OCI image spec and their Docker schema2 twins: descriptors,
//! manifests, indexes, image configs, and platforms.
//!
//! Hand-written rather than taken from the `oci-spec` crate: petri must accept Docker and
//! OCI media types side by side, keep the raw bytes it verified (never a re-serialised
//! copy), and refuse ambiguous documents (CVE-2021-41190) itself. The subset needed for
//! that is small, and every field read here is validated where it is used.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }

    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_LIST
    }

    pub fn is_config(m: &str) -> bool {
        m == OCI_CONFIG || m == DOCKER_CONFIG
    }
}

/// The compression a layer's media type declares. The unpacker also checks the stream's
/// magic bytes, so a media type that lies is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Reads the compression from a layer media type; `None` when the type is not a layer.
    pub fn of_layer_media_type(m: &str) -> Option<Compression> {
        let known_tar = [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.docker.image.rootfs.diff.tar",
            "application/vnd.docker.image.rootfs.foreign.diff.tar",
        ];
        let (base, suffix) = match m.rsplit_once('+') {
            Some((b, s)) => (b, Some(s)),
            None => (m, None),
        };
        let (base, suffix) = match (base, suffix) {
            // Docker's own spelling: "...diff.tar.gzip".
            (b, None) if b.ends_with(".tar.gzip") => (b.trim_end_matches(".gzip"), Some("gzip")),
            other => other,
        };
        if !known_tar.contains(&base) {
            return None;
        }
        match suffix {
            None => Some(Compression::None),
            Some("gzip") => Some(Compression::Gzip),
            Some("zstd") => Some(Compression::Zstd),
            Some(_) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest-level document: either one image, or an index of them.
#[derive(Debug, Clone)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ambiguous document: it has both \"manifests\" and \"config\"/\"layers\" (CVE-2021-41190)")]
    Ambiguous,
    #[error("media type {inside:?} inside the document differs from {declared:?} in its descriptor")]
    MediaTypeMismatch { inside: String, declared: String },
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("unsupported schemaVersion {0} (want 2)")]
    SchemaVersion(u32),
}

impl Document {
    /// Parses a manifest or index, refusing documents whose kind is ambiguous or whose
    /// media type disagrees with the one the referrer declared.
    pub fn parse(bytes: &[u8], declared: Option<&str>) -> Result<Document, DocumentError> {
        let raw: serde_json::Value = serde_json::from_slice(bytes)?;
        let has = |k: &str| raw.get(k).is_some();
        if has("manifests") && (has("config") || has("layers")) {
            return Err(DocumentError::Ambiguous);
        }
        let inside = raw.get("mediaType").and_then(|v| v.as_str());
        if let (Some(inside), Some(declared)) = (inside, declared) {
            if inside != declared {
                return Err(DocumentError::MediaTypeMismatch {
                    inside: inside.into(),
                    declared: declared.into(),
                });
            }
        }
        let kind = inside.or(declared);
        let is_index = match kind {
            Some(m) if media::is_index(m) => true,
            Some(m) if media::is_manifest(m) => false,
            Some(m) => return Err(DocumentError::UnsupportedMediaType(m.into())),
            None => has("manifests"),
        };
        let version = raw.get("schemaVersion").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != 2 {
            return Err(DocumentError::SchemaVersion(version as u32));
        }
        Ok(if is_index {
            Document::Index(serde_json::from_value(raw)?)
        } else {
            Document::Manifest(serde_json::from_value(raw)?)
        })
    }
}

/// The image config (application/vnd.oci.image.config.v1+json), as much as petri uses.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// os/architecture[/variant], as in `--platform linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running machine, in Go's GOARCH spelling as registries use it.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// Whether an index entry's platform satisfies this requested one. A requested variant
    /// must match, except that arm64's "v8" also matches an entry that names none.
    pub fn matches(&self, entry: &Platform) -> bool {
        if self.os != entry.os || self.architecture != entry.architecture {
            return false;
        }
        match (&self.variant, &entry.variant) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.architecture == "arm64" && want == "v8",
        }
    }

    /// The first of an index's entries that runs on this platform; otherwise the list of
    /// platforms the index offers, for the error message.
    pub fn pick<'a>(&self, entries: &[&'a Descriptor]) -> Result<&'a Descriptor, String> {
        entries
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| self.matches(p)))
            .copied()
            .ok_or_else(|| {
                entries
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(format!(
                "invalid platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64"
            ));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest_json(media_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{}","digest":"{CFG}","size":0}},"layers":[]}}"#,
            media::OCI_CONFIG
        )
    }

    #[test]
    fn parses_manifest_and_index() {
        let m = Document::parse(manifest_json(media::OCI_MANIFEST).as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert!(matches!(m, Document::Manifest(_)));
        let idx = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Document::parse(idx.as_bytes(), None).unwrap(),
            Document::Index(_)
        ));
    }

    #[test]
    fn refuses_ambiguous_documents() {
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[],"config":{{"mediaType":"x","digest":"{CFG}","size":0}},"layers":[]}}"#
        );
        assert!(matches!(
            Document::parse(doc.as_bytes(), None),
            Err(DocumentError::Ambiguous)
        ));
    }

    #[test]
    fn refuses_media_type_confusion() {
        let doc = manifest_json(media::OCI_MANIFEST);
        let err = Document::parse(doc.as_bytes(), Some(media::OCI_INDEX)).unwrap_err();
        assert!(matches!(err, DocumentError::MediaTypeMismatch { .. }), "{err}");
    }

    #[test]
    fn layer_media_types() {
        use Compression::*;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Some(Gzip)),
            ("application/vnd.oci.image.config.v1+json", Option::None),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", Option::None),
        ];
        for (m, want) in cases {
            assert_eq!(Compression::of_layer_media_type(m), want, "{m}");
        }
    }

    #[test]
    fn platform_matching() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        assert!(p("linux/amd64").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(p("linux/arm").matches(&p("linux/arm/v6")));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
    }
}
