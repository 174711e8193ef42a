"""The vision tower's reuse of per-size tables and scratch buffers (core/vit.py)."""
from __future__ import annotations

import threading

import torch

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
