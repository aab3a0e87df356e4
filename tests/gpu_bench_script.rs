//! `tools/gpu_bench.sh`, the one-shot benchmark run for a GPU machine, driven by a stand-in
//! binary that records its arguments: the steps it runs, the outputs it keeps, the failed
//! step it counts, and the folder it refuses to overwrite. (The benchmarks themselves are
//! the binary's own, tested elsewhere; on lavapipe a real run takes minutes.)

#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gpu-bench-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A stand-in for oscar-wgpu: prints its arguments, and fails the JSON kernel table.
fn stub_binary(dir: &Path) -> PathBuf {
    let path = dir.join("oscar-wgpu");
    fs::write(
        &path,
        "#!/bin/sh\necho \"args: $*\"\ncase \"$*\" in *--kernels*--json*) echo 'no adapter' >&2; exit 3;; esac\n",
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `tools/gpu_bench.sh <out> --binary <bin> <extra> --no-torch` (the test is about the
/// binary's steps).
fn gpu_bench(out: &Path, bin: &Path, extra: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gpu_bench.sh");
    Command::new("bash")
        .arg(script)
        .arg(out)
        .arg("--binary")
        .arg(bin)
        .args(extra)
        .arg("--no-torch")
        .output()
        .expect("bash runs")
}

#[test]
fn runs_every_step_keeps_each_output_and_counts_the_failed_one() {
    let dir = scratch("steps");
    let bin = stub_binary(&dir);
    let out = dir.join("results");
    let run = gpu_bench(&out, &bin, &["--sizes", "64"]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "one failed step: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |f: &str| fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert_eq!(read("adapters.txt"), "args: adapters\n");
    assert_eq!(
        read("kernels.txt"),
        "args: bench --kernels --backend vulkan\n"
    );
    assert!(read("log.txt").contains("== kernels-json ==\nno adapter\n== e2e =="));
    assert_eq!(
        read("e2e.json"),
        "args: bench --synthetic --backend vulkan --sizes 64 --levels 5 --json -v\n"
    );
    let steps = read("steps.txt");
    for (name, rc) in [
        ("adapters", 0),
        ("kernels", 0),
        ("kernels-json", 3),
        ("e2e", 0),
    ] {
        let rc = rc.to_string();
        let listed = |l: &str| l.split_whitespace().take(3).eq([name, "rc", rc.as_str()]);
        assert!(
            steps.lines().any(listed),
            "{name} with rc {rc} in:\n{steps}"
        );
    }
    assert!(read("machine.txt").contains("UTC"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_an_existing_folder_and_leaves_it_alone() {
    let dir = scratch("existing");
    let bin = stub_binary(&dir);
    let out = dir.join("results");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("kernels.txt"), "earlier results").unwrap();
    let run = gpu_bench(&out, &bin, &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("exists"));
    assert_eq!(
        fs::read_to_string(out.join("kernels.txt")).unwrap(),
        "earlier results"
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    fs::remove_dir_all(&dir).unwrap();
}
