"""Means summed in the official order: equal, bit for bit, to a row of a stacked reduction."""
from __future__ import annotations

import pytest
import torch

from tagclip_ros.core.reduce import flat_mean, row_means


@pytest.fixture
def threads():
    """Run with several threads (a full reduction is then split), restoring the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    yield
    torch.set_num_threads(before)


def test_flat_mean_equals_the_official_stacked_per_block_mean(threads):
    torch.manual_seed(0)
    blocks = torch.rand(3, 1, 301, 301) ** 8  # skewed like attention, 90,000 entries per block
    stacked = torch.stack([b[0, 1:, 1:] for b in blocks])           # the official layout
    official = stacked.reshape(len(blocks), -1).mean(dim=-1)
    ours = torch.stack([flat_mean(b[0, 1:, 1:]) for b in blocks])   # from strided views
    assert torch.equal(ours, official)


def test_row_means_of_one_row_and_of_columns(threads):
    torch.manual_seed(1)
    column = torch.rand(200_000) ** 8
    assert torch.equal(row_means(column[None])[0], torch.stack([column, column]).mean(dim=-1)[0])
    matrix = torch.rand(500, 7)
    official = torch.stack([matrix[:, c].contiguous().mean() for c in range(7)])
    assert torch.equal(row_means(matrix.T), official)
