//! `petri image pull` against a real registry (Debian's docker-registry), pushed to with
//! skopeo: plain pulls and runs, basic and bearer auth, tampering, platforms, zstd, a
//! download cut halfway, CDN redirects, mirrors, and layers the store already has.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::proxy::{BearerAuth, Fault, Proxy};
use common::registry::{have_tools, multi_platform_layout, Registry};
use common::{busybox, is_root, require, test_image, Root};
use serde_json::Value;

fn needs(test: &str) -> bool {
    require(
        test,
        is_root(),
        "needs root (layers hold device nodes and other owners' files)",
    ) && require(test, have_tools(), "needs docker-registry, skopeo and htpasswd")
}

/// A petri pull with a clean credential environment, plus `env`.
fn pull(root: &Root, args: &[&str], env: &[(&str, &str)]) -> Output {
    let docker_config = tempfile::tempdir().unwrap();
    let mut cmd = root.cmd();
    cmd.args(["image", "pull"]).args(args);
    cmd.env("DOCKER_CONFIG", docker_config.path());
    for var in [
        "PETRI_REGISTRY_USERNAME",
        "PETRI_REGISTRY_PASSWORD",
        "PETRI_REGISTRY_MIRROR",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run petri image pull")
}

fn pull_ok(root: &Root, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = pull(root, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "petri image pull {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn pull_fails(root: &Root, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = pull(root, args, env);
    assert_eq!(out.status.code(), Some(125), "pull {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// The layer digests of an OCI layout's (only) image, from its manifest.
fn layout_layers(layout: &Path) -> Vec<String> {
    let blob = |d: &str| -> Value {
        let path = layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The digest of the layout's biggest layer (busybox's: the binary itself).
fn biggest_layer(layout: &Path) -> String {
    layout_layers(layout)
        .into_iter()
        .max_by_key(|d| {
            fs::metadata(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:")))
                .unwrap()
                .len()
        })
        .unwrap()
}

/// Nothing of a refused image is left: no layers, no catalog entry, no staging.
fn assert_store_empty(root: &Root) {
    assert!(
        root.entries("layers").is_empty(),
        "layers: {:?}",
        root.entries("layers")
    );
    assert!(root.entries("tmp").is_empty(), "tmp: {:?}", root.entries("tmp"));
    assert!(
        root.entries("blobs/sha256").is_empty(),
        "blobs: {:?}",
        root.entries("blobs/sha256")
    );
    let ls = root.ok(&["-q", "image", "ls"]);
    assert!(ls.trim().is_empty(), "image ls: {ls}");
}

#[test]
fn pull_then_run_and_run_pulls_on_demand() {
    if !needs("pull_then_run_and_run_pulls_on_demand") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "team/busybox:v1");
    let image = format!("{}/team/busybox:v1", registry.host());

    let root = Root::new();
    let out = pull_ok(&root, &[&image], &[]);
    let served = registry.manifest_digest("team/busybox", "v1");
    assert!(out.contains(&served), "{out}");
    let inspected = root.json(&["image", "inspect", &image]);
    assert_eq!(inspected["digest"], served.as_str());
    assert_eq!(root.layer_dirs(&image).len(), layout_layers(&busybox()).len());
    let ran = root.ok(&["run", "--rm", "--image", &image, "cat", "/etc/passwd"]);
    assert!(ran.starts_with("root:"), "{ran}");

    // From an empty root, `run` pulls the image it lacks (the acceptance command's shape).
    let fresh = Root::new();
    let out = fresh.ok(&["run", "--rm", "--image", &image, "echo", "pulled on demand"]);
    assert_eq!(out, "pulled on demand\n");
    assert_eq!(fresh.json(&["image", "inspect", &image])["digest"], served.as_str());

    // By digest: verified against the digest asked for, stored without a name.
    let by_digest = format!("{}/team/busybox@{served}", registry.host());
    let root3 = Root::new();
    pull_ok(&root3, &[&by_digest], &[]);
    assert_eq!(root3.json(&["image", "inspect", &by_digest])["digest"], served.as_str());
}

#[test]
fn layers_in_the_store_are_not_downloaded_again() {
    if !needs("layers_in_the_store_are_not_downloaded_again") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "busybox:latest");
    let proxy = Proxy::start(registry.addr(), Fault::None);
    let root = Root::new();
    root.ok(&["image", "load", busybox().to_str().unwrap()]);
    pull_ok(&root, &[&format!("{}/busybox:latest", proxy.host())], &[]);
    let requests = proxy.requests();
    for layer in layout_layers(&busybox()) {
        assert!(
            !requests.iter().any(|r| r.contains(&layer)),
            "layer {layer} was fetched: {requests:?}"
        );
    }
    assert!(requests.iter().any(|r| r.contains("/manifests/latest")), "{requests:?}");
}

#[test]
fn basic_auth_needs_the_right_credentials() {
    if !needs("basic_auth_needs_the_right_credentials") {
        return;
    }
    let registry = Registry::start_with_basic_auth("alice", "s3cret");
    registry.push(&busybox(), "busybox:latest");
    let image = format!("{}/busybox:latest", registry.host());

    let root = Root::new();
    let err = pull_fails(&root, &[&image], &[]);
    assert!(err.contains("HTTP 401, no credentials given"), "{err}");
    let err = pull_fails(
        &root,
        &[&image],
        &[
            ("PETRI_REGISTRY_USERNAME", "alice"),
            ("PETRI_REGISTRY_PASSWORD", "wrong"),
        ],
    );
    assert!(err.contains("HTTP 401, credentials refused"), "{err}");
    assert_store_empty(&root);

    pull_ok(
        &root,
        &[&image],
        &[
            ("PETRI_REGISTRY_USERNAME", "alice"),
            ("PETRI_REGISTRY_PASSWORD", "s3cret"),
        ],
    );

    // The same credentials from Docker's config.json.
    let docker = tempfile::tempdir().unwrap();
    let auth = common::proxy::basic_auth("alice", "s3cret");
    let b64 = auth.trim_start_matches("Basic ");
    fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths": {{"http://{}": {{"auth": "{b64}"}}}}}}"#, registry.host()),
    )
    .unwrap();
    let root2 = Root::new();
    pull_ok(&root2, &[&image], &[("DOCKER_CONFIG", docker.path().to_str().unwrap())]);
    assert_eq!(root2.layer_dirs(&image).len(), 3);
}

#[test]
fn bearer_tokens_are_fetched_once_and_reused() {
    if !needs("bearer_tokens_are_fetched_once_and_reused") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "team/busybox:latest");
    let auth = BearerAuth {
        user: "bob".into(),
        password: "tok3n-pw".into(),
    };
    let proxy = Proxy::start_with_bearer(registry.addr(), Fault::None, auth);
    let image = format!("{}/team/busybox:latest", proxy.host());

    let root = Root::new();
    let err = pull_fails(&root, &[&image], &[]);
    assert!(err.contains("401") || err.to_lowercase().contains("auth"), "{err}");
    assert_eq!(proxy.token_requests(), 0);
    let creds = [
        ("PETRI_REGISTRY_USERNAME", "bob"),
        ("PETRI_REGISTRY_PASSWORD", "tok3n-pw"),
    ];
    pull_ok(&root, &[&image], &creds);
    // One token for the manifest, the config and all three layers.
    assert_eq!(proxy.token_requests(), 1, "{:?}", proxy.requests());
    let requests = proxy.requests();
    let token = requests
        .iter()
        .find(|r| r.starts_with("GET /token"))
        .expect("a token request");
    assert!(token.contains("scope=repository%3Ateam%2Fbusybox%3Apull"), "{token}");
    assert!(
        requests.iter().filter(|r| r.contains("/blobs/")).count() >= 4,
        "{requests:?}"
    );
}

#[test]
fn redirected_blobs_do_not_get_the_authorization_header() {
    if !needs("redirected_blobs_do_not_get_the_authorization_header") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "busybox:latest");
    let auth = BearerAuth {
        user: "bob".into(),
        password: "pw".into(),
    };
    let proxy = Proxy::start_with_bearer(registry.addr(), Fault::RedirectBlobs, auth);
    let root = Root::new();
    let image = format!("{}/busybox:latest", proxy.host());
    pull_ok(
        &root,
        &[&image],
        &[("PETRI_REGISTRY_USERNAME", "bob"), ("PETRI_REGISTRY_PASSWORD", "pw")],
    );
    let cdn = proxy.cdn_requests();
    assert!(cdn.len() >= 4, "config and layers go through the CDN: {cdn:?}");
    assert!(cdn.iter().all(|(_, had_auth)| !had_auth), "{cdn:?}");
    assert_eq!(root.layer_dirs(&image).len(), 3);
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_stored() {
    if !needs("a_tampered_blob_is_refused_and_nothing_is_stored") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "busybox:latest");
    let layers = layout_layers(&busybox());
    let proxy = Proxy::start(registry.addr(), Fault::CorruptBlob(layers[1].clone()));
    let root = Root::new();
    let err = pull_fails(&root, &[&format!("{}/busybox:latest", proxy.host())], &[]);
    assert!(err.contains(&layers[1]), "{err}");
    assert!(err.contains("digest"), "{err}");
    assert_store_empty(&root);
}

#[test]
fn a_tampered_manifest_is_refused_by_tag_and_by_digest() {
    if !needs("a_tampered_manifest_is_refused_by_tag_and_by_digest") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "busybox:latest");
    let digest = registry.manifest_digest("busybox", "latest");
    for (fault, reference) in [
        ("latest", "busybox:latest".to_string()),
        ("*", format!("busybox@{digest}")),
    ] {
        let proxy = Proxy::start(registry.addr(), Fault::AlterManifest(fault.into()));
        let root = Root::new();
        let err = pull_fails(&root, &[&format!("{}/{reference}", proxy.host())], &[]);
        assert!(err.contains("digest") || err.contains("hashes"), "{reference}: {err}");
        assert_store_empty(&root);
    }
}

#[test]
fn a_multi_platform_index_gives_the_platform_asked_for() {
    if !needs("a_multi_platform_index_gives_the_platform_asked_for") {
        return;
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (_index, amd64, arm64) = multi_platform_layout(&busybox(), dir.path());
    registry.push_all(dir.path(), "multi:latest");
    let image = format!("{}/multi:latest", registry.host());

    let root = Root::new();
    pull_ok(&root, &[&image, "--platform", "linux/amd64"], &[]);
    let got = root.json(&["image", "inspect", &image]);
    assert_eq!(got["digest"], amd64.as_str());
    assert_eq!(got["platform"], "linux/amd64");

    let root = Root::new();
    pull_ok(&root, &[&image, "--platform", "linux/arm64/v8"], &[]);
    let got = root.json(&["image", "inspect", &image]);
    assert_eq!(got["digest"], arm64.as_str());
    assert!(got.to_string().contains("PETRI_PLATFORM=arm64"), "{got}");

    let root = Root::new();
    let err = pull_fails(&root, &[&image, "--platform", "linux/s390x"], &[]);
    assert!(err.contains("linux/amd64") && err.contains("linux/arm64/v8"), "{err}");
    assert_store_empty(&root);
}

#[test]
fn docker_schema2_manifests_and_manifest_lists_pull() {
    if !needs("docker_schema2_manifests_and_manifest_lists_pull") {
        return;
    }
    let registry = Registry::start();
    registry.push_docker_schema2(&busybox(), "v2s2:latest", false);
    let dir = tempfile::tempdir().unwrap();
    multi_platform_layout(&busybox(), dir.path());
    registry.push_docker_schema2(dir.path(), "v2s2-list:latest", true);

    let root = Root::new();
    let image = format!("{}/v2s2:latest", registry.host());
    pull_ok(&root, &[&image], &[]);
    let inspected = root.json(&["image", "inspect", &image]);
    assert!(
        inspected
            .to_string()
            .contains("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{inspected}"
    );
    assert_eq!(inspected["digest"], registry.manifest_digest("v2s2", "latest").as_str());
    assert_eq!(root.ok(&["run", "--rm", &image, "echo", "schema2"]), "schema2\n");

    let listed = format!("{}/v2s2-list:latest", registry.host());
    pull_ok(&root, &[&listed, "--platform", "linux/arm64/v8"], &[]);
    let got = root.json(&["image", "inspect", &listed]);
    assert_eq!(got["platform"], "linux/arm64/v8");
    assert!(got.to_string().contains("PETRI_PLATFORM=arm64"), "{got}");
}

#[test]
fn zstd_layers_pull_and_run() {
    if !needs("zstd_layers_pull_and_run") {
        return;
    }
    let registry = Registry::start();
    let layout = test_image("busybox", "zstd");
    registry.push(&layout, "busybox-zstd:latest");
    let root = Root::new();
    let image = format!("{}/busybox-zstd:latest", registry.host());
    pull_ok(&root, &[&image], &[]);
    let inspected = root.json(&["image", "inspect", &image]);
    assert!(inspected.to_string().contains("tar+zstd"), "{inspected}");
    assert_eq!(root.ok(&["run", "--rm", &image, "echo", "zstd"]), "zstd\n");
}

#[test]
fn a_download_cut_halfway_resumes_with_a_range_request() {
    if !needs("a_download_cut_halfway_resumes_with_a_range_request") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "busybox:latest");
    let biggest = biggest_layer(&busybox());
    let proxy = Proxy::start(registry.addr(), Fault::CutBlobOnce(biggest.clone()));
    let root = Root::new();
    let image = format!("{}/busybox:latest", proxy.host());
    pull_ok(&root, &[&image], &[]);
    let fetches: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET") && r.contains(&biggest))
        .collect();
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    assert!(
        fetches[1].contains("range=bytes="),
        "the second fetch resumes: {fetches:?}"
    );
    assert_eq!(root.ok(&["run", "--rm", &image, "echo", "whole"]), "whole\n");
}

#[test]
fn a_pull_killed_halfway_leaves_nothing_and_a_second_pull_completes() {
    if !needs("a_pull_killed_halfway_leaves_nothing_and_a_second_pull_completes") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "busybox:latest");
    let biggest = biggest_layer(&busybox());
    let proxy = Proxy::start(registry.addr(), Fault::StallBlobOnce(biggest.clone()));
    let root = Root::new();
    let image = format!("{}/busybox:latest", proxy.host());
    let mut child = root
        .cmd()
        .args(["image", "pull", &image])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the stalled download has started, and a little more for the others.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !proxy.requests().iter().any(|r| r.contains(&biggest)) {
        assert!(std::time::Instant::now() < deadline, "{:?}", proxy.requests());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(root.entries("layers").is_empty(), "{:?}", root.entries("layers"));
    assert!(!root.entries("tmp").is_empty(), "the killed pull left its staging");

    pull_ok(&root, &[&image], &[]);
    assert!(
        root.entries("tmp").is_empty(),
        "staging cleared: {:?}",
        root.entries("tmp")
    );
    assert_eq!(root.ok(&["run", "--rm", &image, "echo", "complete"]), "complete\n");
}

#[test]
fn docker_hub_names_are_pulled_from_a_configured_mirror() {
    if !needs("docker_hub_names_are_pulled_from_a_configured_mirror") {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "library/busybox:latest");
    let mirror = format!("http://{}", registry.host());

    // From the environment, through `run`'s on-demand pull.
    let root = Root::new();
    let mut cmd = root.cmd();
    cmd.env("PETRI_REGISTRY_MIRROR", &mirror)
        .args(["run", "--rm", "busybox", "echo", "from the mirror"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "from the mirror\n");
    let ls = root.ok(&["image", "ls"]);
    assert!(
        ls.contains("busybox") && !ls.contains(&registry.host()),
        "named as asked: {ls}"
    );

    // From ROOT/config.toml.
    let root = Root::new();
    fs::write(
        root.path().join("config.toml"),
        format!("[registry]\nmirrors = [\"{mirror}\"]\n"),
    )
    .unwrap();
    pull_ok(&root, &["busybox:latest"], &[]);
    assert_eq!(root.layer_dirs("busybox").len(), 3);
}

#[test]
fn progress_bars_show_on_a_terminal_only() {
    if !needs("progress_bars_show_on_a_terminal_only")
        || !require(
            "progress_bars_show_on_a_terminal_only",
            common::have_tool("script"),
            "needs script(1)",
        )
    {
        return;
    }
    let registry = Registry::start();
    registry.push(&busybox(), "busybox:latest");
    let image = format!("{}/busybox:latest", registry.host());
    let shorts: Vec<String> = layout_layers(&busybox())
        .iter()
        .map(|d| d.trim_start_matches("sha256:")[..12].to_string())
        .collect();
    // script(1) gives petri a terminal for stdin, stdout and stderr.
    let on_tty = |quiet: bool| -> String {
        let root = Root::new();
        let petri = format!(
            "{} --root {} {} image pull {image}",
            env!("CARGO_BIN_EXE_petri"),
            root.path().display(),
            if quiet { "-q" } else { "" }
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &petri, "/dev/null"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_tty(false);
    for s in &shorts {
        assert!(shown.contains(s.as_str()), "no bar for {s}: {shown}");
    }
    let quiet = on_tty(true);
    assert!(
        shorts.iter().all(|s| !quiet.contains(s.as_str())),
        "-q draws no bars: {quiet}"
    );
    // Not a terminal: no bars either.
    let root = Root::new();
    let out = pull(&root, &[&image], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(shorts.iter().all(|s| !stderr.contains(s.as_str())), "{stderr}");
}
