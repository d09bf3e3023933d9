//! Image references as users type them: `busybox`, `busybox:1.36`,
//! `127.0.0.1:5000/team/app:v1`, `app@sha256:...`, and the direct sources `oci:DIR[:TAG]`,
//! `oci-archive:FILE`, `docker-archive:FILE`.
//!
//! Names follow Docker's grammar and normalisation (a name without a registry is on
//! docker.io, a one-part docker.io name is under `library/`), so a spec that says
//! `python:3.11` here means what it means to Docker and Beaker.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::digest::Digest;

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";

/// A registry image name with a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Where an image comes from: the store (by name) or a source named directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Named(Reference),
    OciDir { path: PathBuf, tag: Option<String> },
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {value:?}: {reason}")]
pub struct ReferenceError {
    pub value: String,
    pub reason: String,
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ReferenceError {
            value: s.into(),
            reason: reason.into(),
        };
        let non_empty = |p: &str| {
            if p.is_empty() {
                Err(err("the path is empty"))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = match rest.split_once(':') {
                Some((d, t)) => (d, Some(t)),
                None => (rest, None),
            };
            if let Some(t) = tag {
                if !valid_tag(t) {
                    return Err(err("the tag after the directory is not a valid tag"));
                }
            }
            return Ok(ImageRef::OciDir {
                path: non_empty(dir)?,
                tag: tag.map(String::from),
            });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            return Ok(ImageRef::OciArchive(non_empty(rest)?));
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            return Ok(ImageRef::DockerArchive(non_empty(rest)?));
        }
        Ok(ImageRef::Named(s.parse()?))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Named(r) => write!(f, "{r}"),
            ImageRef::OciDir { path, tag: None } => write!(f, "oci:{}", path.display()),
            ImageRef::OciDir { path, tag: Some(t) } => write!(f, "oci:{}:{t}", path.display()),
            ImageRef::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            ImageRef::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ReferenceError {
            value: s.into(),
            reason: reason.into(),
        };
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let (name, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
            _ => (name, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err("invalid tag: use [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (registry, repository) = split_registry(name);
        if !registry.is_empty() && !valid_registry(registry) {
            return Err(err("invalid registry host"));
        }
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(err(
                "invalid repository name: use lowercase letters, digits and separators (. _ __ -) between '/'",
            ));
        }
        if name.len() > 255 {
            return Err(err("name longer than 255 characters"));
        }
        let registry = if registry.is_empty() {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t.map(String::from),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// The short name Docker prints: no `docker.io/`, no `library/`, no tag or digest.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            let repo = self.repository.strip_prefix("library/").unwrap_or(&self.repository);
            repo.to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The fully qualified form, used as the key in the store.
    pub fn canonical(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The same name with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.familiar_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Splits off the registry: the first component is one when it has a '.' or ':' or is
/// `localhost` (Docker's rule).
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => ("", name),
    }
}

pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (r, None),
    };
    let host_ok = (host.starts_with('[') && host.ends_with(']'))
        || (!host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

/// `[a-z0-9]+` runs joined by one separator: `.`, `_`, `__`, or any number of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn named(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn docker_normalisation() {
        let r = named("busybox");
        assert_eq!(r.canonical(), "docker.io/library/busybox:latest");
        assert_eq!(r.to_string(), "busybox:latest");
        assert_eq!(named("team/app:v1").canonical(), "docker.io/team/app:v1");
        let local = named("127.0.0.1:5000/team/app:v1");
        assert_eq!(
            (local.registry.as_str(), local.repository.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        assert_eq!(local.to_string(), "127.0.0.1:5000/team/app:v1");
        assert_eq!(named("localhost/app").registry, "localhost");
        assert_eq!(named("registry.example/app").registry, "registry.example");
    }

    #[test]
    fn digests_and_tags() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = named(&format!("app@{d}"));
        assert_eq!((r.tag, r.digest.unwrap().to_string()), (None, d.to_string()));
        let r = named(&format!("app:v2@{d}"));
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert!(format!("app@{}", &d[..20]).parse::<Reference>().is_err());
    }

    #[test]
    fn invalid_names() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "app:",
            "app:-x",
            "-app",
            "app_",
            "a/../b",
            ":tag",
            "a b",
            "host:port:x/app",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn direct_sources() {
        let r: ImageRef = "oci:rootfs/out/busybox:latest".parse().unwrap();
        assert_eq!(
            r,
            ImageRef::OciDir {
                path: "rootfs/out/busybox".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            "oci:/tmp/x".parse::<ImageRef>().unwrap(),
            ImageRef::OciDir {
                path: "/tmp/x".into(),
                tag: None
            }
        );
        assert_eq!(
            "oci-archive:a.tar".parse::<ImageRef>().unwrap(),
            ImageRef::OciArchive("a.tar".into())
        );
        assert_eq!(
            "docker-archive:b.tar".parse::<ImageRef>().unwrap(),
            ImageRef::DockerArchive("b.tar".into())
        );
        assert!("oci:".parse::<ImageRef>().is_err());
        assert!("oci:dir:bad tag".parse::<ImageRef>().is_err());
    }

    proptest! {
        #[test]
        fn canonical_form_roundtrips(
            repo in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}(-[a-z0-9]{1,4})?){0,2}",
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
            host in proptest::option::of("[a-z]{1,8}\\.[a-z]{2,4}(:[0-9]{2,5})?"),
        ) {
            let s = match &host { Some(h) => format!("{h}/{repo}:{tag}"), None => format!("{repo}:{tag}") };
            let r: Reference = s.parse().unwrap();
            prop_assert_eq!(r.canonical().parse::<Reference>().unwrap(), r.clone());
            prop_assert_eq!(r.to_string().parse::<Reference>().unwrap(), r);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,64}") {
            let _ = s.parse::<ImageRef>();
        }
    }
}
