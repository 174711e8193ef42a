"""Where the benchmarks find the reference fixtures: $TAGCLIP_FIXTURES (the folder holding
`reference/`, as scripts/gpu_check.sh --fixtures sets it on a machine where only the checkout
travels), else ../shared/fixtures beside the repository, as the tests do (test/conftest.py)."""
from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("TAGCLIP_FIXTURES") or os.path.join(os.path.dirname(REPO), "shared", "fixtures")
REFERENCE = os.path.join(FIXTURES, "reference")
WEIGHTS = os.path.join(REFERENCE, "clip_tiny12_seed1.pt")
IMAGES = os.path.join(REFERENCE, "images")
