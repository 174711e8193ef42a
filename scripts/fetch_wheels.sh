#!/usr/bin/env bash
# Download into DIR the wheels a bare CUDA machine lacks to run scripts/gpu_check.sh (the
# pure-Python packages of requirements/gpu_check.txt: open_clip_torch, ftfy, wcwidth), for that
# machine's Python. Run it where a package registry is reachable; carry DIR to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: scripts/fetch_wheels.sh DIR [--python X.Y] [--arch x86_64|aarch64]

Puts in DIR the wheels of requirements/gpu_check.txt (open_clip_torch, ftfy, wcwidth: what a
machine with a CUDA torch and the numeric stack lacks to run the core), built for CPython X.Y
(default 3.12) on Linux ARCH (default x86_64; aarch64 for a Jetson). No dependencies are fetched: the GPU
machine has torch, torchvision, timm, huggingface_hub, safetensors, regex and tqdm already.
A few MB; then: scripts/gpu_check.sh OUTDIR --wheels DIR (docs/gpu.md).
EOF
}

dir="" python_version=3.12 arch=x86_64
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --python) [ $# -ge 2 ] || { echo "fetch_wheels: --python needs a version, e.g. 3.12" >&2; exit 2; }
              python_version=$2; shift ;;
    --arch) [ $# -ge 2 ] || { echo "fetch_wheels: --arch needs x86_64 or aarch64" >&2; exit 2; }
            arch=$2; shift ;;
    -*) echo "fetch_wheels: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$dir" ] || { echo "fetch_wheels: one DIR only (see --help)" >&2; exit 2; }; dir=$1 ;;
  esac
  shift
done
[ -n "$dir" ] || { usage >&2; exit 2; }
[[ $python_version =~ ^3\.[0-9]+$ ]] || { echo "fetch_wheels: --python $python_version is not X.Y" >&2; exit 2; }
[[ $arch =~ ^(x86_64|aarch64)$ ]] || { echo "fetch_wheels: --arch $arch is not x86_64 or aarch64" >&2; exit 2; }

PYTHON=${PYTHON:-python3}
mkdir -p "$dir"
platforms=()
for tag in manylinux_2_28 manylinux_2_17 manylinux2014; do platforms+=(--platform "${tag}_$arch"); done
echo "[fetch_wheels] requirements/gpu_check.txt for CPython $python_version on $arch into $dir"
# The machine's pip constraints must not veto the pins (they are the GPU machine's, not ours).
PIP_CONSTRAINT="" "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --python-version "$python_version" --implementation cp \
  "${platforms[@]}" --platform any -d "$dir" -r requirements/gpu_check.txt
ls -1 "$dir"/*.whl | sed 's|.*/|  |'
du -sh "$dir" | awk '{print "[fetch_wheels] " $1 " in all"}'
