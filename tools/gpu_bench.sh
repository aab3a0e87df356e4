#!/usr/bin/env bash
# Everything BENCHMARKS.md records for one machine, in one go, each output saved in OUT_DIR:
# the adapters, the kernel table (GFLOP/s as a fraction of the adapter's own FMA probe) as a
# table and as JSON, the synthetic full-size encode/decode as JSON with its per-kernel GPU
# times, and — where PyTorch with CUDA and OSCAR's libraries import — the PyTorch baseline
# on the same GPU and the side-by-side of both. Meant for a GPU machine with little time on
# it: no build (it runs a prebuilt binary), every step bounded by a timeout, a failed step
# noted and the next one run.
#
#   tools/gpu_bench.sh OUT_DIR [--binary PATH] [--backend vulkan] [--sizes 256,512]
#                      [--step-timeout 240] [--no-torch]
#
# OUT_DIR must not exist yet, so that earlier results are never overwritten. The exit status
# is the number of failed steps (0: all ran); steps.txt lists each with its status and time.
set -uo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
out=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/oscar-wgpu"
backend=vulkan
sizes=256,512
step_timeout=240
torch=1
while [[ $# -gt 0 ]]; do
    if [[ $1 == --no-torch ]]; then
        torch=0
        shift
        continue
    fi
    [[ $# -ge 2 ]] || usage
    case $1 in
        --binary) bin=$2 ;;
        --backend) backend=$2 ;;
        --sizes) sizes=$2 ;;
        --step-timeout) step_timeout=$2 ;;
        *) usage ;;
    esac
    shift 2
done
[[ -x $bin ]] || { echo "gpu_bench: no oscar-wgpu binary at $bin (build with cargo build --release, or pass --binary)" >&2; exit 2; }
[[ -e $out ]] && { echo "gpu_bench: $out exists; give a new folder" >&2; exit 2; }
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

failed=0
# step NAME FILE CMD...: CMD's stdout into OUT_DIR/FILE, its stderr (progress, warnings,
# errors) into OUT_DIR/log.txt under a `== NAME ==` line.
step() {
    local name=$1 file=$2
    shift 2
    local start=$SECONDS
    echo "== $name ==" >>"$out/log.txt"
    timeout "$step_timeout" "$@" >"$out/$file" 2>>"$out/log.txt"
    local rc=$?
    printf '%-14s rc %-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - start))" "$*" | tee -a "$out/steps.txt"
    [[ $rc -eq 0 ]] || failed=$((failed + 1))
}

{
    date -u +'%Y-%m-%d %H:%M UTC'
    uname -srm
    git -C "$root" describe --always --dirty 2>/dev/null
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
} >"$out/machine.txt" 2>&1

step adapters adapters.txt "$bin" adapters
step kernels kernels.txt "$bin" bench --kernels --backend "$backend"
step kernels-json kernels.json "$bin" bench --kernels --backend "$backend" --json
# -v: each size's GPU time kernel by kernel goes to log.txt.
step e2e e2e.json "$bin" bench --synthetic --backend "$backend" --sizes "$sizes" --levels 5 --json -v

if [[ $torch == 0 ]]; then
    echo "PyTorch baseline not asked for (--no-torch)" | tee -a "$out/steps.txt"
elif python3 -c 'import torch, diffusers, compressai, vector_quantize_pytorch; assert torch.cuda.is_available()' 2>/dev/null; then
    step torch torch.json python3 "$root/tools/bench_torch.py" --synthetic --device cuda --sizes "$sizes" --levels 5 --json
    step compare compare.txt python3 "$root/tools/compare.py" "$out/torch.json" "$out/e2e.json"
else
    echo "no PyTorch with CUDA and OSCAR's libraries here: PyTorch baseline skipped" | tee -a "$out/steps.txt"
fi
exit "$failed"
