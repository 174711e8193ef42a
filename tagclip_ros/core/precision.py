"""Reduced precision the way OpenAI's own float16 CLIP is built.

OpenAI's `convert_weights` casts the weights that feed matrix products (convolution, linear and
attention projections, the output projections) to float16 and leaves LayerNorm, the embeddings
and the logit scale in float32. Here the same tensors of the *vision* tower go to the chosen
low precision (float16 or bfloat16); everything else computes in float32:
- the residual stream and every LayerNorm (their output is cast for the next product);
- every softmax (attention in `vit.py`, class probabilities);
- the text tower, so text features are float32 and shared by all precisions;
- all of DMAR's, CWR's and CLIP-ES's bookkeeping (means, min-max, thresholds, boxes, Grad-CAM),
  which only ever sees float32 tensors.
In float32 nothing is cast, so results are bit for bit those of the plain model.
"""
from __future__ import annotations

import torch


def matmul_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors OpenAI's `convert_weights` casts to float16 (CLIP-ES's loader too): conv and
    linear weights and biases, attention input projections, and the image and text output
    projections, for every submodule of `module`."""
    tensors: list[torch.Tensor | None] = []
    for sub in module.modules():
        if isinstance(sub, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            tensors += [sub.weight, sub.bias]
        if isinstance(sub, torch.nn.MultiheadAttention):
            tensors += [getattr(sub, name, None) for name in (
                "in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                "in_proj_bias", "bias_k", "bias_v")]
        for name in ("proj", "text_projection"):
            value = getattr(sub, name, None)
            tensors.append(value if isinstance(value, torch.Tensor) else None)
    return [t for t in tensors if t is not None]


def apply_precision(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast the matrix-product weights of `model.visual` to `dtype` in place; the rest of the
    model must be float32 already (it stays so). float32 leaves the model untouched."""
    if dtype != torch.float32:
        with torch.no_grad():
            for tensor in matmul_weights(model.visual):
                tensor.data = tensor.data.to(dtype)
    return model


def compute_dtype(visual: torch.nn.Module) -> torch.dtype:
    """The dtype the vision tower's matrix products run in (that of its patch convolution)."""
    return visual.conv1.weight.dtype
