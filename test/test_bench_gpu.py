"""The GPU benchmark's command works end to end on the CPU with the tiny fixture checkpoint:
every row, stage and precision (fp16 refused with its reason), the deviation table, 1-4 cameras
batched and one at a time, and the node under a camera. Figures are checked for presence and
sign only; speed is the benchmark's job."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

from tagclip_ros.core.doctor import cpu_bf16_native

from .conftest import REPO, WEIGHTS

SIZES = [(480, 640), (240, 320)]  # (height, width); small, so that the test stays quick
WORKS = {"tags": (), "clipes": ("clipes",), "dmar": ("dmar_masks",)}
TAG_STAGES = ("preprocess", "coarse", "dmar", "cwr", "overlay")


def run_bench(tmp_path) -> dict:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "bench_gpu.py"), "--device", "cpu", "--quick",
         "--weights", WEIGHTS, "--sizes", "640x480,320x240", "--warmup", "1", "--repeats", "2",
         "--camera-size", "320x240", "--node-seconds", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert str(out) in done.stdout  # it says where it wrote
    return json.loads(out.read_text())


def check_measured(row: dict) -> None:
    """A measured row: every stage of its work timed, positive, and a total and rate."""
    expected = TAG_STAGES + WORKS[row["work"]]
    assert set(row["stages_ms"]) == set(expected), row
    assert all(row["stages_ms"][s] > 0 for s in expected), row
    assert row["total_ms"] > 0 and row["fps"] > 0 and row["runs"] == 2


def test_cpu_run_reports_every_row_stage_precision_and_the_node(tmp_path):
    result = run_bench(tmp_path)
    rows = {(r["precision"], r["height"], r["width"], r["work"]): r for r in result["rows"]}
    assert set(rows) == {(p, h, w, k) for p in ("fp32", "fp16", "bf16") for h, w in SIZES for k in WORKS}
    bf16_native = cpu_bf16_native("/proc/cpuinfo", platform.machine())
    for (precision, *_), row in rows.items():
        if precision == "fp16" or (precision == "bf16" and not bf16_native):
            assert "CUDA" in row["skipped"] or "bfloat16" in row["skipped"], row
        else:
            check_measured(row)
    measured = {r["precision"] for r in result["rows"] if "skipped" not in r}
    deviations = {(d["precision"], d["height"], d["width"], d["work"]) for d in result["deviation"]}
    assert deviations == {(p, h, w, k) for p in measured - {"fp32"} for h, w in SIZES for k in WORKS}
    cameras = result["cameras"]
    assert (cameras["precision"], cameras["height"], cameras["width"]) == ("fp32", 240, 320)
    assert cameras["work"] == "clipes"
    assert [r["cameras"] for r in cameras["rows"]] == [1, 2, 3, 4] and cameras["batching_pays"] is False
    for row in cameras["rows"]:
        assert row["batched_fps"] > 0 and row["one_at_a_time_fps"] > 0 and row["runs"] == 2, row
        assert row["same_tags"] and row["max_abs_score_diff"] < 1e-4 and row["peak_gpu_mb"] is None, row
    node = result["node"]
    assert [(n["precision"], n["method"], n["device"]) for n in node] == [("fp32", "clipes", "cpu")]
    assert node[0]["sent"] == 120 and 0 < node[0]["answered"] <= node[0]["sent"]
    assert node[0]["answered"] + node[0]["dropped"] == node[0]["sent"]
    assert node[0]["latency_ms"]["p50"] > 0 and node[0]["core_median_ms"] > 0
    assert [g["passed"] for g in result["goals"]] == [None] * 3  # goals are for cuda fp16
    table = (tmp_path / "gpu.md").read_text()
    assert "skipped: precision fp16 needs a CUDA device" in table and "30 Hz × 4 s" in table
    assert "Several cameras, one model (fp32, 320×240 frames, tags + CLIP-ES masks)" in table


def test_random_vit_b16_weights_file_loads_back_as_the_same_network(tmp_path):
    """The node loads the benchmark's random ViT-B/16 from an OpenAI-format file: the file
    must build, through `load_model`, the network the core part times (checked on one image's
    features inside `write_openai_weights`, which raises otherwise)."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        from bench_gpu import write_openai_weights
        path, check = write_openai_weights(0, str(tmp_path))
    finally:
        sys.path.remove(os.path.join(REPO, "bench"))
    assert os.path.isfile(path) and check["max_abs_feature_diff"] <= 1e-5
    assert check["network"].startswith("ViT-B/16 (width 768, 12 blocks, 12 heads, 224 px, QuickGELU")


def test_a_failed_goal_makes_the_benchmark_exit_1(tmp_path, monkeypatch):
    """The goals are for cuda fp16; held to them on this CPU in fp32 (tags <= 10 ms per 640×480
    frame, which no CPU meets), the run must report FAIL and exit 1."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        import bench_gpu
    finally:
        sys.path.remove(os.path.join(REPO, "bench"))
    monkeypatch.setattr(bench_gpu, "GOAL_DEVICE", "cpu")
    monkeypatch.setattr(bench_gpu, "GOAL_PRECISION", "fp32")
    out = tmp_path / "gpu.json"
    code = bench_gpu.main(["--device", "cpu", "--weights", WEIGHTS, "--sizes", "640x480",
                           "--precisions", "fp32", "--warmup", "0", "--repeats", "1", "--no-node",
                           "--no-cameras", "--out", str(out)])
    results = json.loads(out.read_text())
    goals = results["goals"]
    assert results["cameras"] is None and results["cameras_note"] == "cameras not measured: --no-cameras"
    assert code == 1 and goals[0]["passed"] is False and goals[0]["value"] > 10
    assert "**FAIL**" in (tmp_path / "gpu.md").read_text()
