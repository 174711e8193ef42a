"""Means summed in the official code's order, for results that are compared to a threshold.

A float32 sum depends on the order of its additions. Where a mean becomes a threshold (DMAR's
attention votes, its class-level boxes), values within its rounding error of it decide votes
and boxes, so the mean must be summed exactly as the official code sums it, not merely
accurately. On the CPU, torch sums each row of a multi-row reduction serially in memory order,
whatever the thread count; a reduction to a single value is split across threads and summed in
another order. The official code takes its means as rows of stacked (or per-class, small)
contiguous tensors, so these helpers always reduce rows.
"""
from __future__ import annotations

import torch


def row_means(rows: torch.Tensor) -> torch.Tensor:
    """Mean of each row of a 2-D tensor (R, M) → (R,), each row summed serially in memory
    order (as one row of a stacked reduction in the official code)."""
    rows = rows.contiguous()
    if rows.shape[0] == 1:
        # A single row would be a full reduction, split across threads: reduce two copies,
        # which torch parallelises over rows and so sums each one serially.
        return rows.expand(2, -1).mean(dim=-1)[:1]
    return rows.mean(dim=-1)


def flat_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of all elements of `tensor`, summed serially in row-major order (0-d)."""
    return row_means(tensor.reshape(1, -1))[0]
