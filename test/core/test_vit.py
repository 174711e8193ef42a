"""The vision tower's reuse of per-size tables and scratch buffers (core/vit.py)."""
from __future__ import annotations

import threading

import torch

from tagclip_ros.core.loading import from_model
from tagclip_ros.core.vit import TABLES_KEPT, VisionTower, Workspace


def test_workspace_reuses_a_buffer_per_shape_and_thread():
    workspace = Workspace()
    first = workspace.get("maps", (2, 3), torch.float32, torch.device("cpu"))
    assert workspace.get("maps", (2, 3), torch.float32, torch.device("cpu")) is first
    assert workspace.get("maps", (2, 4), torch.float32, torch.device("cpu")).shape == (2, 4)
    other = []
    thread = threading.Thread(target=lambda: other.append(
        workspace.get("maps", (2, 4), torch.float32, torch.device("cpu"))))
    thread.start()
    thread.join()
    assert other[0] is not workspace.get("maps", (2, 4), torch.float32, torch.device("cpu"))


def test_per_size_tables_are_reused_and_bounded(loaded):
    tower = VisionTower(loaded)
    first = tower.positional_embedding(30, 40)
    assert tower.positional_embedding(30, 40) is first and tower.self_only_mask(9) is tower.self_only_mask(9)
    for side in range(1, TABLES_KEPT + 2):
        tower.positional_embedding(side, side)
    assert len(tower._tables) == TABLES_KEPT and tower.positional_embedding(30, 40) is not first


def test_compiled_plain_pass_equals_the_eager_one(loaded):
    """The `compile` switch changes how the fixed-shape pass runs, not what it computes."""
    compiled_model = from_model(loaded.model, "cpu", torch.float32, "fixture", compile=True)
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(3, 1, 197, 197)
    mask[:, :, 0, 1:50] = -1000.0
    with torch.no_grad():
        eager = VisionTower(loaded).forward(pixels, mask)
        fast = VisionTower(compiled_model).forward(pixels, mask)
    torch.testing.assert_close(fast, eager, rtol=0, atol=1e-4)
