#!/usr/bin/env bash
# The main job: the tagclip_tagger node on a built-in image source, no ROS distro or camera needed.
# Bootstraps .venv on first use, starts the node (config/tagger.yaml), publishes the images of
# TAGCLIP_IMAGES (default: samples/) once and prints the tags that come back.
#   TAGCLIP_IMAGES=/folder | /path/clip.mp4 | /dev/video0 | 0
#                                      images, a video file (one pass) or a camera (until Ctrl-C)
#   TAGCLIP_WEIGHTS=/path/ViT-B-16.pt  use a local checkpoint instead of downloading OpenAI's
#   TAGCLIP_DEVICE=cuda                device (default auto)
#   TAGCLIP_PRECISION=bf16             fp32 (default), bf16 (CPU or CUDA), fp16 (CUDA)
# Exits 0 after a single pass; 2, with the reason, when the node cannot start.
set -euo pipefail
images=${TAGCLIP_IMAGES:-}
if [ -n "$images" ] && [ -e "$images" ]; then images=$(realpath "$images"); fi  # from the caller's dir
cd "$(dirname "$0")"
scripts/bootstrap.sh
. scripts/ros_env.sh .venv install
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-42}
# Camera-sized images exceed Fast DDS's default shared-memory segment; with best-effort QoS
# they would be lost. LARGE_DATA moves big samples over shared memory + TCP.
export FASTDDS_BUILTIN_TRANSPORTS=${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}

images=${images:-$PWD/samples}
weights=${TAGCLIP_WEIGHTS:-}
fixture=$PWD/../shared/fixtures/reference/clip_tiny12_seed1.pt
# The core's own check (one short request; weights in the Hugging Face cache need none).
if [ -z "$weights" ] && ! .venv/bin/python -c \
    "from tagclip_ros.core.loading import check_download_possible; check_download_possible('ViT-B-16', 'openai')" \
    2>/dev/null; then
  if [ -f "$fixture" ]; then
    echo "[run] OpenAI's weights are neither cached nor downloadable: using the random-weight test checkpoint"
    echo "[run] $fixture (its tags are meaningless; set TAGCLIP_WEIGHTS for real ones)"
    weights=$fixture
  else
    echo "[run] OpenAI's weights are neither cached nor downloadable; set TAGCLIP_WEIGHTS to a local ViT-B-16.pt" >&2
    exit 2
  fi
fi

# Reliable image QoS: image_source sends each image once (the next only when its tags are back)
# as soon as it sees the node's subscription, and a best-effort subscription may still be
# matching then and lose it (the image would be skipped after a 30 s wait).
node_args=(--ros-args --params-file config/tagger.yaml -p "device:=${TAGCLIP_DEVICE:-auto}"
           -p "precision:=${TAGCLIP_PRECISION:-fp32}" -p image_qos:=reliable)
[ -n "$weights" ] && node_args+=(-p "model.weights:=$weights")
node_log=$(mktemp "${TMPDIR:-/tmp}/tagclip-run.XXXXXX")
.venv/bin/tagger_node "${node_args[@]}" > >(tee "$node_log") 2>&1 &
node_pid=$!
trap 'kill -INT $node_pid 2>/dev/null; wait $node_pid 2>/dev/null || true; rm -f "$node_log"' EXIT
echo "[run] tagger started (pid $node_pid); waiting for it to load the model"

# Publish only once the node is active. If it cannot configure (no CUDA for TAGCLIP_DEVICE=cuda,
# unreadable weights) it logs "configure failed: <reason>" and stays up, unconfigured, and the
# image source would wait for a subscriber forever: say why and stop instead. (The two phrases
# are tagclip_ros/node/tagger.py's log lines.)
until grep -q "active: listening on" "$node_log"; do
  if grep -q "configure failed: " "$node_log" || ! kill -0 "$node_pid" 2>/dev/null; then
    reason=$(sed -n 's/.*configure failed: //p' "$node_log" | head -n 1)
    echo "[run] the tagger could not start: ${reason:-it exited (its log is above)}" >&2
    exit 2
  fi
  sleep 0.2
done
echo "[run] publishing $images"
.venv/bin/image_source --ros-args -p "source:=$images" -p loop:=false
