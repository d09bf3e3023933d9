//! The image store end to end, through the `petri` binary: loading every source format,
//! layer semantics as overlayfs sees them, verification failures, platform choice,
//! concurrent loads, and removal.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{busybox, copy_dir, have_tool, is_root, require, snapshot, test_image, Root};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

fn needs_root(test: &str) -> bool {
    require(
        test,
        is_root(),
        "needs root (whiteouts are device nodes, opaque dirs trusted.* xattrs)",
    )
}

/// Mounts the image's layers as overlayfs in a private mount namespace (gone when the
/// shell exits) and runs `script` there with $M set to the mount point.
fn in_overlay(root: &Root, image: &str, script: &str) -> String {
    let mut lower: Vec<PathBuf> = root.layer_dirs(image);
    lower.reverse();
    let lowerdir = lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mnt = root.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(format!(
            "mount -t overlay overlay -o lowerdir={lowerdir} \"$M\"\n{script}"
        ))
        .env("M", &mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "overlay script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn whiteouts_and_opaque_dirs_merge_like_overlayfs() {
    if !needs_root("whiteouts_and_opaque_dirs_merge_like_overlayfs") {
        return;
    }
    let root = Root::new();
    let out = root.ok(&[Path::new("image"), Path::new("load"), &busybox()]);
    assert_eq!(out.trim(), "Loaded image: busybox:latest");
    let merged = in_overlay(
        &root,
        "busybox",
        r#"test ! -e "$M/etc/removed-later.txt" && echo whiteout-ok
ls -A "$M/opt/data" | tr '\n' ' '; echo
stat -c '%a %u:%g' "$M/bin/suid-demo" "$M/home/app/owned.txt"
stat -c '%h' "$M/opt/data/new.txt"
readlink "$M/opt/link-to-data"
getfattr --only-values -n user.petri "$M/opt/xattr.txt"; echo
"$M/bin/busybox" echo runs"#,
    );
    let lines: Vec<&str> = merged.lines().collect();
    assert_eq!(
        lines,
        [
            "whiteout-ok",
            "new.txt ",
            "4755 0:0",
            "640 1000:1000",
            "2",
            "data/new.txt",
            "test",
            "runs"
        ]
    );
}

#[test]
fn ls_and_inspect_report_config_and_layers() {
    if !needs_root("ls_and_inspect_report_config_and_layers") {
        return;
    }
    let root = Root::new();
    root.ok(&[
        Path::new("image"),
        Path::new("load"),
        &busybox(),
        Path::new("--tag"),
        Path::new("team/bb:v1"),
    ]);
    let listed = root.json(&["image", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "team/bb:v1");
    let text = root.ok(&["image", "ls"]);
    let row = text.lines().nth(1).unwrap();
    assert!(
        row.starts_with("team/bb:v1") && row.contains(&listed[0]["digest"].as_str().unwrap()[7..19]),
        "{text}"
    );

    let inspected = root.json(&["image", "inspect", "team/bb:v1"]);
    assert_eq!(inspected["config"]["Cmd"], json!(["sh"]));
    assert_eq!(inspected["config"]["WorkingDir"], "/");
    assert!(inspected["config"]["ExposedPorts"].get("8080/tcp").is_some());
    assert!(inspected["config"]["Env"][0].as_str().unwrap().starts_with("PATH="));
    let layers = inspected["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    // ChainID(1) = DiffID(1); ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)).
    assert_eq!(layers[0]["chain_id"], layers[0]["diff_id"]);
    let chain1 = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(
            format!(
                "{} {}",
                layers[0]["chain_id"].as_str().unwrap(),
                layers[1]["diff_id"].as_str().unwrap()
            )
            .as_bytes()
        ))
    );
    assert_eq!(layers[1]["chain_id"], chain1.as_str());
    // Found by digest and by digest prefix too.
    let digest = inspected["digest"].as_str().unwrap();
    assert_eq!(root.json(&["image", "inspect", digest])["digest"], digest);
    assert_eq!(root.json(&["image", "inspect", &digest[7..20]])["digest"], digest);
    let err = root.fails(&["image", "inspect", "nosuch:image"]);
    assert!(err.contains("no such image: nosuch:image"), "{err}");
}

/// skopeo rewrites the busybox layout as docker-archive, oci-archive and a zstd layout;
/// each loads (by path and as a direct reference) to the very same layer trees.
#[test]
fn every_source_format_unpacks_to_identical_trees() {
    let t = "every_source_format_unpacks_to_identical_trees";
    if !needs_root(t) || !require(t, have_tool("skopeo"), "skopeo is not installed") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = format!("oci:{}:latest", busybox().display());
    let docker = work.path().join("busybox-docker.tar");
    let oci_archive = work.path().join("busybox-oci.tar");
    let zstd = work.path().join("busybox-zstd");
    let copies = [
        (vec![], format!("docker-archive:{}:busybox:latest", docker.display())),
        (vec![], format!("oci-archive:{}:latest", oci_archive.display())),
        (
            vec!["--dest-compress-format", "zstd"],
            format!("oci:{}:latest", zstd.display()),
        ),
    ];
    for (flags, dest) in &copies {
        let out = Command::new("skopeo")
            .arg("copy")
            .args(flags)
            .arg(&src)
            .arg(dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reference = Root::new();
    reference.ok(&[Path::new("image"), Path::new("load"), &busybox()]);
    let want: Vec<_> = reference.layer_dirs("busybox").iter().map(|d| snapshot(d)).collect();
    assert!(want[0].len() > 100, "busybox layer 1 looks empty");

    let zstd_media = fs::read_to_string(zstd.join("index.json")).unwrap();
    assert!(!zstd_media.is_empty());
    for (arg, how) in [
        (docker.display().to_string(), "path"),
        (oci_archive.display().to_string(), "path"),
        (zstd.display().to_string(), "path"),
        (format!("docker-archive:{}", docker.display()), "direct"),
        (format!("oci-archive:{}", oci_archive.display()), "direct"),
        (format!("oci:{}:latest", zstd.display()), "direct"),
    ] {
        let root = Root::new();
        let name = if how == "path" {
            root.ok(&["image", "load", &arg, "--tag", "copy:1"]);
            "copy:1".to_string()
        } else {
            // A direct reference works wherever an image is named.
            let digest = root.json(&["image", "inspect", &arg])["digest"]
                .as_str()
                .unwrap()
                .to_string();
            digest
        };
        let got: Vec<_> = root.layer_dirs(&name).iter().map(|d| snapshot(d)).collect();
        assert_eq!(got.len(), want.len(), "{arg}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "{arg}: layer {i} differs from the OCI layout's");
        }
    }
    // The zstd layout really is zstd.
    let root = Root::new();
    let inspected = root.json(&["image", "inspect", &format!("oci:{}", zstd.display())]);
    assert!(inspected["layers"][0]["media_type"]
        .as_str()
        .unwrap()
        .ends_with("+zstd"));
}

// ---- tampering -------------------------------------------------------------------------

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

fn read_blob_json(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&fs::read(blob_path(layout, digest)).unwrap()).unwrap()
}

/// Stores a JSON document as a blob; returns its digest and size.
fn write_blob_json(layout: &Path, value: &Value) -> (String, u64) {
    let bytes = serde_json::to_vec(value).unwrap();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    fs::write(blob_path(layout, &digest), &bytes).unwrap();
    (digest, bytes.len() as u64)
}

fn manifest_of(layout: &Path) -> (Value, Value) {
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read_blob_json(layout, index["manifests"][0]["digest"].as_str().unwrap());
    (index, manifest)
}

/// Replaces the layout's manifest with `manifest`, re-pointing index.json at it.
fn reseal(layout: &Path, mut index: Value, manifest: &Value) {
    let (digest, size) = write_blob_json(layout, manifest);
    index["manifests"][0]["digest"] = json!(digest);
    index["manifests"][0]["size"] = json!(size);
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn assert_store_empty(root: &Root) {
    assert_eq!(root.json(&["image", "ls"]), json!([]));
    assert_eq!(
        root.entries("layers"),
        Vec::<String>::new(),
        "a layer of a refused image is visible"
    );
    assert_eq!(root.entries("tmp"), Vec::<String>::new(), "staging left behind");
}

fn tampered(name: &str, tamper: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join(name);
    copy_dir(&busybox(), &layout);
    tamper(&layout);
    (work, layout)
}

#[test]
fn wrong_manifest_digest_is_refused() {
    if !needs_root("wrong_manifest_digest_is_refused") {
        return;
    }
    let (_w, layout) = tampered("bad-manifest", |layout| {
        let (index, mut manifest) = manifest_of(layout);
        manifest["annotations"] = json!({"tampered": "yes"});
        // Same file name, other contents: the digest no longer matches.
        let path = blob_path(layout, index["manifests"][0]["digest"].as_str().unwrap());
        fs::write(path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    });
    let root = Root::new();
    let err = root.fails(&[Path::new("image"), Path::new("load"), &layout]);
    assert!(
        err.contains("manifest sha256:") && err.contains("does not match its descriptor"),
        "{err}"
    );
    assert_store_empty(&root);
}

#[test]
fn wrong_blob_size_is_refused() {
    if !needs_root("wrong_blob_size_is_refused") {
        return;
    }
    let (_w, layout) = tampered("bad-size", |layout| {
        let (index, mut manifest) = manifest_of(layout);
        let size = manifest["layers"][1]["size"].as_u64().unwrap();
        manifest["layers"][1]["size"] = json!(size + 1);
        reseal(layout, index, &manifest);
    });
    let root = Root::new();
    let err = root.fails(&[Path::new("image"), Path::new("load"), &layout]);
    assert!(err.contains("blob size mismatch"), "{err}");
    assert_store_empty(&root);
}

#[test]
fn wrong_diff_id_is_refused() {
    if !needs_root("wrong_diff_id_is_refused") {
        return;
    }
    let (_w, layout) = tampered("bad-diff-id", |layout| {
        let (index, mut manifest) = manifest_of(layout);
        let mut config = read_blob_json(layout, manifest["config"]["digest"].as_str().unwrap());
        config["rootfs"]["diff_ids"][2] = json!(format!("sha256:{}", "ab".repeat(32)));
        let (digest, size) = write_blob_json(layout, &config);
        manifest["config"]["digest"] = json!(digest);
        manifest["config"]["size"] = json!(size);
        reseal(layout, index, &manifest);
    });
    let root = Root::new();
    let err = root.fails(&[Path::new("image"), Path::new("load"), &layout]);
    assert!(err.contains("does not match the config's diff_id"), "{err}");
    assert_store_empty(&root);
}

#[test]
fn tampered_layer_bytes_are_refused() {
    if !needs_root("tampered_layer_bytes_are_refused") {
        return;
    }
    let (_w, layout) = tampered("bad-layer", |layout| {
        let (_, manifest) = manifest_of(layout);
        let path = blob_path(layout, manifest["layers"][2]["digest"].as_str().unwrap());
        let mut bytes = fs::read(&path).unwrap();
        let crc = bytes.len() - 8; // the gzip trailer's CRC32
        bytes[crc] ^= 0x01;
        fs::write(&path, bytes).unwrap();
    });
    let root = Root::new();
    let err = root.fails(&[Path::new("image"), Path::new("load"), &layout]);
    assert!(err.contains("layer sha256:"), "{err}");
    assert_store_empty(&root);
}

// ---- platforms -------------------------------------------------------------------------

/// A layout whose index offers the gzip busybox as linux/amd64 and the zstd one as
/// linux/s390x.
fn multi_platform_layout(dir: &Path) -> (PathBuf, String, String) {
    let layout = dir.join("multi");
    copy_dir(&busybox(), &layout);
    let zstd = test_image("busybox", "zstd");
    for blob in fs::read_dir(zstd.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        fs::copy(blob.path(), layout.join("blobs/sha256").join(blob.file_name())).unwrap();
    }
    let (gz_index, _) = manifest_of(&layout);
    let (zstd_index, _) = manifest_of(&zstd);
    let mut amd64 = gz_index["manifests"][0].clone();
    let mut s390x = zstd_index["manifests"][0].clone();
    amd64["platform"] = json!({"os": "linux", "architecture": "amd64"});
    s390x["platform"] = json!({"os": "linux", "architecture": "s390x"});
    let nested = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd64.clone(), s390x.clone()],
    });
    let (digest, size) = write_blob_json(&layout, &nested);
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let d = |v: &Value| v["digest"].as_str().unwrap().to_string();
    (layout, d(&amd64), d(&s390x))
}

#[test]
fn an_index_picks_the_requested_platform() {
    if !needs_root("an_index_picks_the_requested_platform") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (layout, amd64, s390x) = multi_platform_layout(work.path());
    let root = Root::new();
    let loaded = root.json(&[Path::new("image"), Path::new("load"), &layout]);
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(loaded["image"]["digest"], amd64.as_str());
    }
    let loaded = root.json(&[
        Path::new("image"),
        Path::new("load"),
        &layout,
        Path::new("--platform"),
        Path::new("linux/s390x"),
    ]);
    assert_eq!(loaded["image"]["digest"], s390x.as_str());
    assert_eq!(loaded["names"], json!(["multi:latest"]));
    let err = root.fails(&[
        Path::new("image"),
        Path::new("load"),
        &layout,
        Path::new("--platform"),
        Path::new("linux/riscv64"),
    ]);
    assert!(
        err.contains("no image for platform linux/riscv64") && err.contains("available: linux/amd64, linux/s390x"),
        "{err}"
    );
}

// ---- concurrency and removal -----------------------------------------------------------

#[test]
fn concurrent_loads_into_one_root_agree() {
    if !needs_root("concurrent_loads_into_one_root_agree") {
        return;
    }
    let root = Root::new();
    let image = busybox();
    let children: Vec<_> = (0..4)
        .map(|i| {
            root.cmd()
                .args(["image", "load"])
                .arg(&image)
                .args(["--tag", &format!("bb:{i}")])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let listed = root.json(&["image", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "one image, four names: {listed}");
    assert_eq!(listed[0]["names"].as_array().unwrap().len(), 4);
    assert_eq!(root.entries("layers").len(), 3);
    assert_eq!(root.entries("tmp"), Vec::<String>::new());
    let reference = Root::new();
    reference.ok(&[Path::new("image"), Path::new("load"), &image]);
    for (a, b) in root.layer_dirs("bb:0").iter().zip(reference.layer_dirs("busybox")) {
        assert!(
            snapshot(a) == snapshot(&b),
            "a concurrently loaded layer differs: {}",
            a.display()
        );
    }
}

#[test]
fn rm_removes_only_what_no_other_image_uses() {
    if !needs_root("rm_removes_only_what_no_other_image_uses") {
        return;
    }
    let root = Root::new();
    root.ok(&[Path::new("image"), Path::new("load"), &busybox()]);
    root.ok(&[
        Path::new("image"),
        Path::new("load"),
        &busybox(),
        Path::new("--tag"),
        Path::new("other:v1"),
    ]);
    // The zstd build has another manifest but the same diff_ids: its layers are shared.
    let zstd = root.json(&[
        Path::new("image"),
        Path::new("load"),
        &test_image("busybox", "zstd"),
        Path::new("--tag"),
        Path::new("zbox"),
    ]);
    assert_eq!(zstd["layers_reused"], 3);
    let blobs_before = root.entries("blobs/sha256").len();
    assert_eq!(blobs_before, 3, "two manifests and one shared config");

    assert_eq!(root.ok(&["image", "rm", "busybox"]).trim(), "Untagged: busybox:latest");
    assert!(root.json(&["image", "inspect", "other:v1"])["digest"].is_string());
    let out = root.ok(&["image", "rm", "other:v1"]);
    assert!(
        out.contains("Untagged: other:v1") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert_eq!(
        root.entries("layers").len(),
        3,
        "layers still used by zbox were removed"
    );
    assert_eq!(root.entries("blobs/sha256").len(), 2);

    // A direct reference names the image it holds.
    let direct = format!("oci:{}", test_image("busybox", "zstd").display());
    let out = root.ok(&["image", "rm", &direct]);
    assert!(
        out.contains("Untagged: zbox:latest") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert_eq!(root.json(&["image", "ls"]), json!([]));
    assert_eq!(root.entries("layers"), Vec::<String>::new());
    assert_eq!(root.entries("blobs/sha256"), Vec::<String>::new());
    let err = root.fails(&["image", "rm", "zbox"]);
    assert!(err.contains("no such image"), "{err}");
}
