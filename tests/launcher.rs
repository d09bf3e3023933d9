//! Launching from a multi-threaded process: `sandbox::launch` refuses to fork there, and
//! the re-executed launcher helper starts, signals and reaps sandboxes for callers on
//! several threads at once.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{busybox, is_root, require, Root};
use petri::cgroup::{Hierarchy, Limits};
use petri::image::oci::Platform;
use petri::image::store::Store;
use petri::sandbox::launcher::{Launcher, LauncherError};
use petri::sandbox::{self, Network, ProcessSpec, SandboxError, SandboxSpec};

fn spec(root: &Root, out: &Path, id: &str, script: &str) -> SandboxSpec {
    let store = Store::open(root.path()).unwrap();
    let (image, _) = store.resolve("busybox", &Platform::host()).unwrap();
    SandboxSpec {
        id: id.to_string(),
        hostname: id.to_string(),
        layers_dir: root.path().join("layers"),
        lower: image.lower_dirs(),
        bundle: root.path().join("containers").join(id),
        remove: true,
        pool: Some(root.path().join("pool")),
        binds: vec![(out.to_path_buf(), "/out".into(), false)],
        process: ProcessSpec {
            argv: ["sh", "-c", script].iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: None,
            stdin: false,
            tty: false,
        },
        limits: Limits::default(),
        network: Network::Isolated,
        shm_bytes: 64 << 20,
    }
}

fn setup(test: &str) -> Option<(Root, tempfile::TempDir)> {
    if !require(test, is_root(), "needs root (namespaces, overlay, cgroups)") {
        return None;
    }
    let root = Root::new();
    root.ok(&[Path::new("image"), Path::new("load"), &busybox()]);
    Some((root, tempfile::tempdir().unwrap()))
}

#[test]
fn direct_launch_refuses_a_multi_threaded_caller() {
    let Some((root, out)) = setup("direct_launch_refuses_a_multi_threaded_caller") else {
        return;
    };
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let extra = std::thread::spawn(move || parked.recv());
    let err = sandbox::launch(
        &spec(&root, out.path(), "direct", "true"),
        &Hierarchy::detect().unwrap(),
    );
    let msg = match err {
        Err(SandboxError::Sys { source, .. }) => source.to_string(),
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.pid())),
    };
    assert!(msg.contains("threads"), "{msg}");
    assert_eq!(
        root.entries("containers"),
        Vec::<String>::new(),
        "nothing is prepared before the refusal"
    );
    drop(stop);
    let _ = extra.join();
}

#[test]
fn the_launcher_serves_several_threads() {
    let Some((root, out)) = setup("the_launcher_serves_several_threads") else {
        return;
    };
    let launcher = Launcher::spawn(Path::new(env!("CARGO_BIN_EXE_petri"))).unwrap();
    std::thread::scope(|s| {
        for n in 1..=4 {
            let (launcher, root, out) = (&launcher, &root, out.path());
            s.spawn(move || {
                let id = format!("box{n}");
                let script = format!("echo $HOSTNAME > /out/$HOSTNAME; exit {n}");
                let pid = launcher.start(&spec(root, out, &id, &script)).unwrap();
                assert!(pid > 1);
                assert_eq!(launcher.wait(&id).unwrap().code, n);
            });
        }
    });
    for n in 1..=4 {
        let written = std::fs::read_to_string(out.path().join(format!("box{n}"))).unwrap();
        assert_eq!(written, format!("box{n}\n"));
    }
    assert_eq!(
        root.entries("containers"),
        Vec::<String>::new(),
        "bundles were not removed"
    );
    let (clean, dirty) = root.pooled_bundles();
    assert!(
        (1..=4).contains(&dirty) && clean <= 4,
        "{clean} clean, {dirty} dirty bundles kept"
    );
    let mut bad = spec(&root, out.path(), "missing", "");
    bad.process.argv = vec!["no-such-program".into()];
    match launcher.start(&bad) {
        Err(LauncherError::Failed { code, message }) => {
            assert_eq!(code, 127);
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn the_launcher_forwards_signals() {
    let Some((root, out)) = setup("the_launcher_forwards_signals") else {
        return;
    };
    let launcher = Launcher::spawn(Path::new(env!("CARGO_BIN_EXE_petri"))).unwrap();
    let script = "trap 'exit 9' TERM; touch /out/ready; while :; do sleep 0.1; done";
    launcher.start(&spec(&root, out.path(), "sig", script)).unwrap();
    let ready: PathBuf = out.path().join("ready");
    for _ in 0..200 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(ready.exists(), "the container never got ready");
    launcher.signal("sig", rustix::process::Signal::TERM).unwrap();
    assert_eq!(launcher.wait("sig").unwrap().code, 9);
}
