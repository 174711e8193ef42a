#!/usr/bin/env bash
# The GPU check in one command, for a bare CUDA machine (no network, no ROS, none of this
# project's other dependencies): see --help. docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: scripts/gpu_check.sh OUTDIR [--wheels DIR] [--fixtures DIR] [--quick] [--text-cache DIR]

Run on the GPU machine, from the repository, with `python3` (or $PYTHON) the Python whose
CUDA-enabled torch is to be used (it is never replaced). It:
  0. installs the wheels of DIR (scripts/fetch_wheels.sh DIR, run where a package registry is
     reachable: open_clip_torch, ftfy, wcwidth) into a private folder put first on PYTHONPATH
     for this run and removed after it: no venv, nothing else touched;
  1. `tagclip doctor --json`                                        -> OUTDIR/doctor.log
  2. the CUDA tests, pytest test/core/test_cuda.py (and test/node/test_cuda_node.py where rclpy
     imports), none skipped for want of a GPU (TAGCLIP_REQUIRE_CUDA=1) -> tests.log, tests.xml
  3. bench/bench_gpu.py: per-stage ms and frames/s at 640x480 and 1280x720 in fp32/fp16/bf16,
     peak GPU memory, deviation from fp32; frames/s summed over 1, 2, 3 and 4 cameras at
     640x480 in fp16, batched and one at a time; its node part only where rclpy imports, else
     the report says "node not measured: no ROS 2 here"      -> bench_gpu.log, bench_gpu.json
  4. bench/bench_precision.py --device cuda: fp16/bf16 against fp32 on the reference fixtures
                                                             -> precision.log, precision.json
  and writes OUTDIR/summary.md: GPU, driver, torch/CUDA, the goals with PASS/FAIL (tags <= 10 ms
  and tags + CLIP-ES masks <= 25 ms per 640x480 frame in fp16, the node >= 29 Hz under a 30 Hz
  camera, fp32 scores equal to the official references to 1e-4, every CUDA test passing), each
  step's status and time, every test's outcome, and the benchmarks' tables (the cameras table
  among them). 8 files in all.

Each step has a time limit; the whole check takes under 6 minutes on a data-center GPU
(--quick: fewer repeats, under 2). Progress is printed as it goes.

Options:
  --wheels DIR    wheels to install first (default: none; the packages must then be there)
  --fixtures DIR  the folder holding reference/ (default ../shared/fixtures); the tests and
                  benchmarks read it through TAGCLIP_FIXTURES
  --quick         a smoke run: fewer repeats and warm-up runs
  --text-cache DIR  text-feature cache the benchmarks share and keep (default: a temporary one)

Exit status: 0 every step ran and every measured goal passed; 1 otherwise; 2 a usage error;
3 (with one sentence) no usable CUDA device, or a package or the fixtures missing.
EOF
}

out="" wheels="" fixtures=../shared/fixtures options=()
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --wheels|--fixtures|--text-cache)
      [ $# -ge 2 ] || { echo "gpu_check: $1 needs a folder (see --help)" >&2; exit 2; }
      [ -d "$2" ] || { echo "gpu_check: $1 $2 is not a folder" >&2; exit 2; }
      case $1 in
        --wheels) wheels=$2 ;;
        --fixtures) fixtures=$2 ;;
        *) options+=(--text-cache "$(cd "$2" && pwd)") ;;
      esac
      shift ;;
    --quick) options+=(--quick) ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "gpu_check: one OUTDIR only (see --help)" >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || { usage >&2; exit 2; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "gpu_check: no $PYTHON on PATH (set PYTHON)" >&2; exit 3; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "gpu_check: $PYTHON is older than Python 3.10" >&2; exit 3; }

site=$(mktemp -d "${TMPDIR:-/tmp}/tagclip-gpu-check.XXXXXX")
trap 'rm -rf "$site"' EXIT
if [ -n "$wheels" ]; then
  shopt -s nullglob
  files=("$wheels"/*.whl)
  [ ${#files[@]} -gt 0 ] || { echo "gpu_check: no wheels in $wheels (scripts/fetch_wheels.sh fills it)" >&2; exit 3; }
  echo "[gpu_check] installing ${#files[@]} wheels from $wheels into a private folder"
  PIP_CONSTRAINT="" "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index \
    --no-deps --no-compile --no-cache-dir --target "$site" "${files[@]}"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
TAGCLIP_FIXTURES=$(cd "$fixtures" 2>/dev/null && pwd || echo "$fixtures")
export TAGCLIP_FIXTURES PYTHONUNBUFFERED=1
status=0
"$PYTHON" bench/gpu_check.py "$out" "${options[@]}" || status=$?
exit $status
