//! A real OCI registry for pull tests: Debian's docker-registry (distribution v2) on a
//! free 127.0.0.1 port with throwaway storage, optionally behind htpasswd basic auth,
//! filled with skopeo from the project's OCI layouts. Also builds a two-platform layout
//! (an image index) from a single-platform one.

use std::fs::{self, File};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::proxy;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether the tools this module runs are installed (docker-registry, skopeo, htpasswd).
pub fn have_tools() -> bool {
    ["docker-registry", "skopeo", "htpasswd"]
        .iter()
        .all(|tool| super::have_tool(tool))
}

/// A running docker-registry; killed and its storage removed on drop.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    creds: Option<(String, String)>,
}

impl Registry {
    /// Anonymous access. Waits until GET /v2/ answers.
    pub fn start() -> Registry {
        Registry::launch(None)
    }

    /// htpasswd basic auth (bcrypt), realm "petri-test".
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::launch(Some((user.to_string(), password.to_string())))
    }

    /// Tries a few ports: another process may take the free port between probe and bind.
    fn launch(creds: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("petri-registry-")
            .tempdir()
            .expect("registry temp dir");
        fs::create_dir(dir.path().join("storage")).expect("registry storage dir");
        if let Some((user, password)) = &creds {
            write_htpasswd(dir.path(), user, password);
        }
        for _ in 0..5 {
            let addr = free_addr();
            write_config(dir.path(), addr, creds.is_some());
            let mut child = spawn(dir.path());
            match wait_ready(&mut child, addr, dir.path()) {
                Ok(()) => {
                    return Registry {
                        child,
                        dir,
                        addr,
                        creds,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    assert!(
                        why.contains("address already in use"),
                        "docker-registry did not start: {why}"
                    );
                }
            }
        }
        panic!("docker-registry: no free port after 5 tries");
    }

    /// The last 4 KiB of the registry's log.
    pub fn log_tail(&self) -> String {
        log_tail(self.dir.path())
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// skopeo copy oci:LAYOUT docker://HOST/REPO_TAG (the layout's only image).
    pub fn push(&self, layout: &Path, repo_tag: &str) {
        self.skopeo_copy(layout, repo_tag, &[]);
    }

    /// Same for a layout whose image is an index: every platform, digests unchanged.
    pub fn push_all(&self, layout: &Path, repo_tag: &str) {
        self.skopeo_copy(layout, repo_tag, &["--all", "--preserve-digests"]);
    }

    /// Pushes converted to Docker's schema2 media types (a manifest list for an index).
    pub fn push_docker_schema2(&self, layout: &Path, repo_tag: &str, all: bool) {
        let extra: &[&str] = if all {
            &["--format", "v2s2", "--all"]
        } else {
            &["--format", "v2s2"]
        };
        self.skopeo_copy(layout, repo_tag, extra);
    }

    fn skopeo_copy(&self, layout: &Path, repo_tag: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .args(extra);
        if let Some((user, password)) = &self.creds {
            cmd.arg(format!("--dest-creds={user}:{password}"));
        }
        cmd.arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {} to {repo_tag} failed ({}): {}\nregistry log:\n{}",
            layout.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// The Docker-Content-Digest the registry serves for repo:reference.
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> String {
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let auth = self.creds.as_ref().map(|(u, p)| proxy::basic_auth(u, p));
        let mut headers = vec![("Accept", accept.as_str())];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = proxy::request(self.addr, "HEAD", &path, &headers).expect("HEAD manifest");
        assert_eq!(resp.status, 200, "HEAD {path}: {:?}", resp.headers);
        resp.header("Docker-Content-Digest")
            .unwrap_or_else(|| panic!("HEAD {path}: no Docker-Content-Digest"))
            .to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ok once GET /v2/ answers 200 or 401; Err(why + log tail) if the process exits or 10 s
/// pass.
fn wait_ready(child: &mut Child, addr: SocketAddr, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait docker-registry") {
            return Err(format!("exited with {status}\n{}", log_tail(dir)));
        }
        if let Ok(resp) = proxy::request(addr, "GET", "/v2/", &[]) {
            if resp.status == 200 || resp.status == 401 {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("no answer on {addr} in 10 s\n{}", log_tail(dir)))
}

fn log_tail(dir: &Path) -> String {
    let log = fs::read(dir.join("registry.log")).unwrap_or_default();
    String::from_utf8_lossy(&log[log.len().saturating_sub(4096)..]).into_owned()
}

/// A port nobody listens on now (bound, then released).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

fn write_htpasswd(dir: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd");
    assert!(
        out.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(dir.join("htpasswd"), &out.stdout).expect("write htpasswd");
}

fn write_config(dir: &Path, addr: SocketAddr, auth: bool) {
    let mut config = format!(
        "version: 0.1\nlog:\n  level: info\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        dir.join("storage").display()
    );
    if auth {
        config += &format!(
            "auth:\n  htpasswd:\n    realm: petri-test\n    path: {}\n",
            dir.join("htpasswd").display()
        );
    }
    fs::write(dir.join("config.yml"), config).expect("write registry config");
}

fn spawn(dir: &Path) -> Child {
    let log = File::create(dir.join("registry.log")).expect("create registry log");
    let log2 = log.try_clone().expect("dup registry log");
    Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .expect("spawn docker-registry")
}

/// Writes `src`'s image plus an arm64/v8 variant of it into `dest` as one image index
/// (tagged like `src`'s entry). The arm64 config is the original with
/// "architecture":"arm64", "variant":"v8" and Env "PETRI_PLATFORM=arm64"; the amd64
/// manifest is the original, unchanged. Returns the digests of (index, amd64 manifest,
/// arm64 manifest).
pub fn multi_platform_layout(src: &Path, dest: &Path) -> (String, String, String) {
    let index: Value = read_json(&src.join("index.json"));
    let entries = index["manifests"].as_array().expect("index.json manifests");
    assert_eq!(entries.len(), 1, "{}: want one image", src.display());
    let amd64 = entries[0].clone();
    let amd64_digest = amd64["digest"].as_str().expect("entry digest").to_string();

    copy_blobs(src, dest);
    let manifest: Value = read_json(&blob_path(dest, &amd64_digest));
    let config_digest = manifest["config"]["digest"].as_str().expect("config digest");
    let config = arm64_config(read_json(&blob_path(dest, config_digest)));
    let (config_digest, config_size) = write_blob(dest, &to_bytes(&config));

    let mut arm64 = manifest;
    arm64["config"]["digest"] = json!(config_digest);
    arm64["config"]["size"] = json!(config_size);
    let (arm64_digest, arm64_size) = write_blob(dest, &to_bytes(&arm64));

    let image_index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            platform_entry(&amd64_digest, amd64["size"].clone(), "amd64", None),
            platform_entry(&arm64_digest, json!(arm64_size), "arm64", Some("v8")),
        ],
    });
    let (index_digest, index_size) = write_blob(dest, &to_bytes(&image_index));
    write_index_json(dest, &index_digest, index_size, &amd64);
    (index_digest, amd64_digest, arm64_digest)
}

fn arm64_config(mut config: Value) -> Value {
    config["architecture"] = json!("arm64");
    config["variant"] = json!("v8");
    let env = &mut config["config"]["Env"];
    if !env.is_array() {
        *env = json!([]);
    }
    env.as_array_mut()
        .expect("Env array")
        .push(json!("PETRI_PLATFORM=arm64"));
    config
}

fn platform_entry(digest: &str, size: Value, arch: &str, variant: Option<&str>) -> Value {
    let mut platform = json!({"architecture": arch, "os": "linux"});
    if let Some(variant) = variant {
        platform["variant"] = json!(variant);
    }
    json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": platform})
}

/// index.json with one entry, the image index, named like `src_entry`.
fn write_index_json(dest: &Path, digest: &str, size: u64, src_entry: &Value) {
    let mut entry = json!({"mediaType": OCI_INDEX, "digest": digest, "size": size});
    let name = &src_entry["annotations"]["org.opencontainers.image.ref.name"];
    if !name.is_null() {
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]});
    fs::write(dest.join("index.json"), to_bytes(&index)).expect("write index.json");
    fs::write(dest.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
}

fn copy_blobs(src: &Path, dest: &Path) {
    let (from, to) = (src.join("blobs/sha256"), dest.join("blobs/sha256"));
    fs::create_dir_all(&to).expect("create blobs dir");
    for entry in fs::read_dir(&from).expect("read blobs dir") {
        let entry = entry.expect("blob entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy blob");
    }
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// Stores `bytes` as a blob; returns its digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> (String, u64) {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    let mut file = File::create(blob_path(layout, &digest)).expect("create blob");
    file.write_all(bytes).expect("write blob");
    (digest, bytes.len() as u64)
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}
