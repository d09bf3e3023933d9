//! How to reach registries: mirrors and plain-http registries from `ROOT/config.toml`
//! and `PETRI_REGISTRY_MIRROR`, and credentials from the environment or Docker's
//! `config.json`.
//!
//! Mirrors follow Docker's `registry-mirrors`: they stand in for Docker Hub only, are
//! tried in order, and Docker Hub itself is the last resort. The image keeps the name
//! it was asked by (`busybox` stays `docker.io/library/busybox:latest`), so a spec that
//! works offline against a mirror works unchanged against the real registry.
//!
//! ```toml
//! [registry]
//! mirrors = ["http://127.0.0.1:5000"]   # http:// = plain http; bare host = https
//! insecure = ["registry.lan:5000"]        # reached over plain http
//! ```

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::image::reference::DEFAULT_REGISTRY;

pub const MIRROR_ENV: &str = "PETRI_REGISTRY_MIRROR";
pub const USERNAME_ENV: &str = "PETRI_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "PETRI_REGISTRY_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// One registry to talk to: `host[:port]`, over https or plain http.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub plain_http: bool,
}

impl Endpoint {
    /// `http://h:p` is plain http; `https://h:p` and a bare `h:p` are https unless the
    /// host is a loopback address (Docker treats those as insecure too).
    fn parse(s: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, s),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{s:?} is not a registry host[:port]"));
        }
        let plain_http = match scheme {
            Some("http") => true,
            Some("https") => false,
            None => is_loopback(host),
            Some(other) => return Err(format!("{s:?}: unknown scheme {other:?}")),
        };
        Ok(Endpoint {
            host: host.to_string(),
            plain_http,
        })
    }

    pub fn url(&self) -> String {
        format!("{}://{}", if self.plain_http { "http" } else { "https" }, self.host)
    }
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    registry: RegistrySection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySection {
    #[serde(default)]
    mirrors: Vec<String>,
    #[serde(default)]
    insecure: Vec<String>,
}

/// The registry settings of one petri root.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Stand-ins for Docker Hub, in the order they are tried.
    pub mirrors: Vec<Endpoint>,
    /// Hosts reached over plain http.
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    /// Reads `root/config.toml` (absent is fine); `PETRI_REGISTRY_MIRROR` (a
    /// comma-separated list) replaces the file's mirrors.
    pub fn load(root: &Path) -> Result<RegistryConfig, ConfigError> {
        let path = root.join("config.toml");
        let file: FileConfig = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                path: path.clone(),
                detail: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        // Where the mirror list came from, for the error naming a bad entry.
        let (mirrors, from) = match std::env::var(MIRROR_ENV) {
            Ok(list) => (
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                PathBuf::from(format!("${MIRROR_ENV}")),
            ),
            Err(_) => (file.registry.mirrors, path),
        };
        let mirrors = mirrors
            .iter()
            .map(|m| Endpoint::parse(m))
            .collect::<Result<_, _>>()
            .map_err(|detail| ConfigError::Invalid { path: from, detail })?;
        Ok(RegistryConfig {
            mirrors,
            insecure: file.registry.insecure,
        })
    }

    /// The endpoints to try for an image of `registry`, in order.
    pub fn endpoints(&self, registry: &str, insecure: bool) -> Vec<Endpoint> {
        let own = Endpoint {
            host: if registry == DEFAULT_REGISTRY {
                "index.docker.io".to_string()
            } else {
                registry.to_string()
            },
            plain_http: insecure || is_loopback(registry) || self.insecure.iter().any(|h| h == registry),
        };
        let mut list = if registry == DEFAULT_REGISTRY {
            self.mirrors.clone()
        } else {
            Vec::new()
        };
        list.push(own);
        list
    }
}

/// A user name and password for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ****)", self.username)
    }
}

/// Credentials for `host`: `PETRI_REGISTRY_USERNAME`/`PETRI_REGISTRY_PASSWORD` when both
/// are set (they apply to whatever registry the command reaches), else what Docker would
/// use from `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, else none.
pub fn credentials(host: &str) -> Result<Option<Credentials>, ConfigError> {
    if let (Ok(username), Ok(password)) = (std::env::var(USERNAME_ENV), std::env::var(PASSWORD_ENV)) {
        return Ok(Some(Credentials { username, password }));
    }
    let dir = match (std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME")) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(home)) => Path::new(&home).join(".docker"),
        (None, None) => return Ok(None),
    };
    docker_config_credentials(&dir.join("config.json"), host, None)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Docker's order: the `credHelpers` entry for the host, else the `credsStore` helper,
/// else the `auths` entry, whose keys may be `host`, `https://host` or
/// `https://index.docker.io/v1/`.
/// `helper_dir`: where credential helpers are (None: found on PATH).
fn docker_config_credentials(
    path: &Path,
    host: &str,
    helper_dir: Option<&Path>,
) -> Result<Option<Credentials>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let invalid = |detail: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        detail,
    };
    let config: DockerConfig = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let want = auth_key(host);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(k, _)| auth_key(k) == want)
        .map(|(_, v)| v)
        .or(config.creds_store.as_ref());
    if let Some(helper) = helper {
        let program = format!("docker-credential-{helper}");
        return Ok(from_helper(
            &helper_dir.map_or(program.clone().into(), |d| d.join(&program)),
            &want,
        ));
    }
    let Some(entry) = config.auths.iter().find(|(k, _)| auth_key(k) == want).map(|(_, v)| v) else {
        return Ok(None);
    };
    if let Some(encoded) = &entry.auth {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| invalid(format!("auths[{host}].auth: {e}")))?;
        let text = String::from_utf8(decoded).map_err(|_| invalid(format!("auths[{host}].auth is not UTF-8")))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| invalid(format!("auths[{host}].auth is not user:password")))?;
        return Ok(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }));
    }
    Ok(match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Asks `docker-credential-NAME get` (Docker's credential-helper protocol: the server on
/// stdin, JSON on stdout). A helper that is missing, fails or knows nothing gives no
/// credentials, with a warning: anonymous pulls still work.
fn from_helper(program: &Path, host: &str) -> Option<Credentials> {
    use std::io::Write as _;
    let server = if host == DEFAULT_REGISTRY {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let run = || -> std::io::Result<std::process::Output> {
        let mut child = std::process::Command::new(program)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(server.as_bytes())?;
        child.wait_with_output()
    };
    let answer = match run() {
        Ok(out) if out.status.success() => {
            serde_json::from_slice::<HelperAnswer>(&out.stdout).map_err(|e| e.to_string())
        }
        Ok(out) => Err(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        // An identity token is for Docker's OAuth flow, which petri does not speak.
        Ok(a) if a.username == "<token>" => {
            tracing::warn!(helper = %program.display(), host, "the helper holds an identity token, not a password; pulling anonymously");
            None
        }
        Ok(a) => Some(Credentials {
            username: a.username,
            password: a.secret,
        }),
        Err(error) => {
            tracing::warn!(helper = %program.display(), host, %error, "no credentials from the helper; pulling anonymously");
            None
        }
    }
}

/// The host part of an `auths` key, with Docker Hub's aliases made one.
fn auth_key(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DEFAULT_REGISTRY.to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_schemes_and_loopback() {
        let e = Endpoint::parse("http://mirror.lan:5000").unwrap();
        assert!(e.plain_http);
        assert_eq!(e.host, "mirror.lan:5000");
        assert!(!Endpoint::parse("mirror.lan").unwrap().plain_http);
        assert!(Endpoint::parse("127.0.0.1:5000").unwrap().plain_http);
        assert!(!Endpoint::parse("https://127.0.0.1:5000/").unwrap().plain_http);
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://x/path").is_err());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "registry.lan", "localhost.evil.com", "[fe80::1]:5000"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn mirrors_stand_in_for_docker_hub_only() {
        let cfg = RegistryConfig {
            mirrors: vec![Endpoint::parse("http://m:1").unwrap()],
            insecure: vec!["lan:5000".into()],
        };
        let hub = cfg.endpoints("docker.io", false);
        assert_eq!(hub.len(), 2);
        assert_eq!(hub[0].host, "m:1");
        assert_eq!(hub[1].host, "index.docker.io");
        assert!(!hub[1].plain_http);
        let lan = cfg.endpoints("lan:5000", false);
        assert_eq!(lan, vec![Endpoint::parse("http://lan:5000").unwrap()]);
        assert!(cfg.endpoints("quay.io", true)[0].plain_http);
    }

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{b64}"}},
                    "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                    "bad:1": {{"auth": "!!"}}}}}}"#
            ),
        )
        .unwrap();
        let hub = docker_config_credentials(&path, "docker.io", None).unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("alice", "s3cret:x"));
        let local = docker_config_credentials(&path, "127.0.0.1:5000", None)
            .unwrap()
            .unwrap();
        assert_eq!(local.username, "bob");
        assert!(docker_config_credentials(&path, "quay.io", None).unwrap().is_none());
        let err = docker_config_credentials(&path, "bad:1", None).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("auths[bad:1]"), "{err}");
        assert!(docker_config_credentials(&dir.path().join("none.json"), "x", None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn credential_helpers_come_before_auths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let name = "petri-test";
        let script = dir.path().join(format!("docker-credential-{name}"));
        std::fs::write(
            &script,
            "#!/bin/sh\nread server\ncase \"$server\" in\n\
             lan:5000) echo '{\"ServerURL\":\"lan:5000\",\"Username\":\"carol\",\"Secret\":\"pw\"}';;\n\
             *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"lan:5000": {{"username": "u", "password": "p"}}, "other:1": {{}}}},
                "credHelpers": {{"lan:5000": "{name}"}}, "credsStore": "missing-helper"}}"#
            ),
        )
        .unwrap();
        let lan = docker_config_credentials(&path, "lan:5000", Some(dir.path()))
            .unwrap()
            .unwrap();
        let other = docker_config_credentials(&path, "other:1", Some(dir.path())).unwrap();
        assert_eq!((lan.username.as_str(), lan.password.as_str()), ("carol", "pw"));
        assert!(other.is_none(), "credsStore's helper is missing: anonymous");
    }

    #[test]
    fn config_file_and_env_mirror() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RegistryConfig::load(dir.path()).unwrap().mirrors.is_empty() || std::env::var_os(MIRROR_ENV).is_some());
        std::fs::write(
            dir.path().join("config.toml"),
            "[registry]\nmirrors = [\"http://m:1\"]\ninsecure = [\"lan:5\"]\n",
        )
        .unwrap();
        let cfg = RegistryConfig::load(dir.path()).unwrap();
        assert_eq!(cfg.insecure, vec!["lan:5".to_string()]);
        if std::env::var_os(MIRROR_ENV).is_none() {
            assert_eq!(cfg.mirrors, vec![Endpoint::parse("http://m:1").unwrap()]);
        }
        std::fs::write(dir.path().join("config.toml"), "[registry]\nmirror = 1\n").unwrap();
        let err = RegistryConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.toml") && err.contains("mirror"), "{err}");
    }
}
