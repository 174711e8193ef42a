"""The soak benchmark's command works end to end on a short run (the real run: README)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import REPO


def test_short_soak_reports_memory_latency_and_losses(tmp_path):
    out = tmp_path / "soak"
    done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "bench_soak.py"),
                           "--frames", "60", "--method", "none", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["frames_sent"] == 60 and not result["crashed"]
    assert 0 < result["answered"] <= 60 and result["answered"] + result["dropped"] == 60
    assert result["rss_end_mb"] > 100 and result["per_minute"][0]["p99_ms"] > 0
    assert "RSS after warm-up" in (tmp_path / "soak.md").read_text()
