#!/usr/bin/env bash
# Redraws the README's overlay pictures, docs/overlay_cocostuff.jpg (many tags) and
# docs/overlay_dark.jpg (a night scene), with `tagclip overlay --vocab cocostuff` and the
# fixtures' reference checkpoint (random weights: the tags are noise; the drawing is the point).
# Usage: scripts/docs_overlays.sh [FIXTURES]  (default $TAGCLIP_FIXTURES, else ../shared/fixtures;
# PYTHON defaults to .venv/bin/python). A few minutes on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
reference="${1:-${TAGCLIP_FIXTURES:-../shared/fixtures}}/reference"
python="${PYTHON:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m tagclip_ros.cli overlay "$reference/images/astronaut.jpg" "$reference/images/night_1280x720.jpg" \
    --out "$work" --vocab cocostuff --weights "$reference/clip_tiny12_seed1.pt" --device cpu \
    --cache-dir "$work/cache" >/dev/null
"$python" - "$work" <<'PY'
import sys
from PIL import Image
for stem, name in (("astronaut", "cocostuff"), ("night_1280x720", "dark")):
    with Image.open(f"{sys.argv[1]}/{stem}_overlay.png") as picture:
        picture.convert("RGB").save(f"docs/overlay_{name}.jpg", quality=85)
PY
