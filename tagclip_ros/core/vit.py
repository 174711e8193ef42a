"""The CLIP vision transformer, run the way TagCLIP and CLIP-ES need it.

open_clip's forward returns only the pooled feature. TagCLIP needs more: every token projected
to the joint space, the head-averaged attention of every block, native (non-224) resolutions,
a last block where each token attends only to itself, and per-sample attention masks for the
class-wise crops. This module runs open_clip's own weights block by block to provide that.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .loading import LoadedModel
from .precision import compute_dtype

AttentionHook = Callable[[int, torch.Tensor], None]

# Per-size positional tables and masks kept (a camera has one size; a bag may have a few).
TABLES_KEPT = 8
# The official code adds -100 (not -inf) to off-diagonal logits of the last block.
SELF_ONLY_PENALTY = -100.0


class Workspace:
    """Scratch tensors by name, one set per thread, reallocated only when a shape, dtype or
    device changes (callers must not keep them beyond their own use)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
        buffers = self._local.__dict__.setdefault("buffers", {})
        tensor = buffers.get(name)
        if tensor is None or tensor.shape != shape or tensor.dtype != dtype or tensor.device != device:
            buffers[name] = None  # the old one goes before the new one is allocated
            tensor = buffers[name] = torch.empty(shape, dtype=dtype, device=device)
        return tensor


class VisionTower:
    """Block-by-block access to a loaded CLIP's image encoder."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.visual = loaded.model.visual
        self.dtype = compute_dtype(self.visual)  # of the matrix products; the rest is float32
        self._workspace = Workspace()
        self._plain = compiled(self._plain_blocks, loaded.device) if loaded.compile else self._plain_blocks
        self._tables: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # by grid size, see _table
        self._tables_lock = threading.Lock()

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return self.visual.transformer.resblocks

    def positional_embedding(self, grid_h: int, grid_w: int, always_resample: bool = False) -> torch.Tensor:
        """Positional table for a grid_h × grid_w patch grid (class token first).

        Off the training grid the patch table is resized bilinearly and, as in the official
        code, the result is rounded through float16."""
        return self._table(("positional", grid_h, grid_w, always_resample),
                           lambda: self._build_positional(grid_h, grid_w, always_resample))

    def _build_positional(self, grid_h: int, grid_w: int, always_resample: bool) -> torch.Tensor:
        table = self.visual.positional_embedding
        side = int(round((table.shape[0] - 1) ** 0.5))
        if (grid_h, grid_w) == (side, side) and not always_resample:
            return table
        patches = table[1:].float().T.reshape(1, -1, side, side)
        patches = F.interpolate(patches, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        resized = torch.cat([table[:1].float(), patches.reshape(table.shape[1], -1).T])
        return resized.half().to(table.dtype)

    def self_only_mask(self, tokens: int) -> torch.Tensor:
        """`self_only_mask` for `tokens` tokens on the model's device, made once per size."""
        return self._table(("self-only", tokens), lambda: self_only_mask(tokens, self.loaded.device))

    def _table(self, key: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A per-size table, built on first use and kept for the next frames of that size (the
        TABLES_KEPT most recently used: a stream of ever new sizes cannot grow memory)."""
        with self._tables_lock:
            if key in self._tables:
                self._tables.move_to_end(key)
            else:
                self._tables[key] = build()
                while len(self._tables) > TABLES_KEPT:
                    self._tables.popitem(last=False)
            return self._tables[key]

    def embed(self, pixels: torch.Tensor, always_resample: bool = False) -> torch.Tensor:
        """Patch + class tokens with positions, after ln_pre: (B, 1 + gh*gw, width), float32."""
        x = self.visual.conv1(pixels.to(device=self.loaded.device, dtype=self.dtype)).float()
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = self.visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid_h, grid_w, always_resample)
        return self.visual.ln_pre(x)

    def block(self, index: int, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
              hook: AttentionHook | None = None) -> torch.Tensor:
        """One residual block; `attn_mask` is added to the attention logits (broadcast over
        heads); `hook` receives the head-averaged attention *before* the mask, as the official
        code reports it."""
        return self.block_from_normed(index, x, self.blocks[index].ln_1(x), attn_mask, hook)

    def block_from_normed(self, index: int, x: torch.Tensor, normed: torch.Tensor,
                          attn_mask: torch.Tensor | None = None,
                          hook: AttentionHook | None = None) -> torch.Tensor:
        """Block `index` from its residual input `x` and `normed` = its ln_1(x), given apart so
        that a caller can differentiate with respect to the ln_1 output (CLIP-ES's Grad-CAM
        layer) without recomputing or differentiating through the blocks before it."""
        blk = self.blocks[index]
        x = x + blk.ls_1(self.attention(blk.attn, normed.to(self.dtype), attn_mask, index, hook,
                                        self._workspace))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x).to(self.dtype)))

    def run_blocks(self, x: torch.Tensor, indices: range, hook: AttentionHook | None = None) -> torch.Tensor:
        """Tokens after the blocks in `indices` (consecutive, in order), without masks."""
        for index in indices:
            x = self.block(index, x, None, hook)
        return x

    @staticmethod
    def attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, attn_mask: torch.Tensor | None,
                  index: int, hook: AttentionHook | None,
                  workspace: Workspace | None = None) -> torch.Tensor:
        """Multi-head attention of `x` (in the weights' dtype); see `block` for the mask and
        hook. Without a hook: the fused kernel. Hooked, the maps are computed explicitly: in
        float32 by `_explicit_attention`, in reduced precision by `low_precision_attention`
        (float32 maps in `workspace`)."""
        batch, tokens, width = x.shape
        heads = attn.num_heads
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        if hook is None:
            mask = None if attn_mask is None else attn_mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            attend = _explicit_attention if q.dtype == torch.float32 else low_precision_attention
            out, averaged = attend(q, k, v, attn_mask, workspace or Workspace())
            hook(index, averaged)
        out = out.transpose(1, 2).reshape(batch, tokens, width)
        return attn.out_proj(out)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """ln_post and the projection, applied to every token: (B, N, embed_dim), in the
        matrix-product dtype (callers take it to float32)."""
        return self.visual.ln_post(x).to(self.dtype) @ self.visual.proj

    def forward(self, pixels: torch.Tensor, attn_mask: torch.Tensor | None = None,
                hook: AttentionHook | None = None) -> torch.Tensor:
        """All tokens projected to the joint space; `attn_mask` applies in every block.
        Without a hook this is a fixed-shape pass (CWR's crops), compiled when the model was
        loaded with `compile`."""
        x = self.embed(pixels)
        if hook is None:
            return self.project(self._plain(x, attn_mask))
        for index in range(len(self.blocks)):
            x = self.block(index, x, attn_mask, hook)
        return self.project(x)

    def _plain_blocks(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Every block, without hooks."""
        for index in range(len(self.blocks)):
            x = self.block(index, x, attn_mask)
        return x


def compiled(function: Callable, device: torch.device) -> Callable:
    """`function` compiled by torch.compile for the shapes it meets (one compilation per new
    shape, which takes tens of seconds), with CUDA graphs on a GPU, where a batch-1 pass is
    bound by kernel launches; on the CPU compilation does not pay (docs/gpu.md)."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(function, dynamic=False, mode=mode)


def low_precision_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            attn_mask: torch.Tensor | None,
                            workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    """`_explicit_attention` for low-precision queries, keys and values, as torch.autocast
    splits the work: the products in the low precision (logits, then weights times values),
    the softmax and the head average in float32 (the average is what DMAR and CLIP-ES read).
    Masked (the last block, once per frame), the output comes from the fused kernel.

    The maps (tokens² per head) live in two buffers of `workspace`, kept from one block and one
    frame to the next: on the CPU a fresh map of that size costs more in page faults than its
    softmax does."""
    shape = (*q.shape[:-1], k.shape[-2])
    low = workspace.get("attention-low", shape, q.dtype, q.device)
    weights = workspace.get("attention", shape, torch.float32, q.device)
    torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2), out=low)
    torch.softmax(weights.copy_(low), dim=-1, out=weights)
    averaged = weights.mean(dim=1)
    if attn_mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype)), averaged
    return torch.matmul(low.copy_(weights), v), averaged


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        attn_mask: torch.Tensor | None,
                        workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output (batch, heads, tokens, head_width) and the head-averaged attention
    *before* the mask (batch, tokens, tokens), with the maps computed explicitly.

    The maps are tokens² floats per head (52 MB at 1280×720 with ViT-B/16's patches), so the
    order of work bounds the peak: without autograd the softmax goes in place (same kernel,
    same values); the masked output is taken one head at a time (one extra map, not a masked
    copy of every head's); and every head's map is freed before the caller sees the average.
    The average itself is the official one — the sum over the materialised heads divided by
    their number — because torch's sum over heads adds in an order that depends on an
    element's position and the thread count (from 5 heads on), which no head-by-head
    accumulation reproduces bit for bit.

    float32 only; reduced precision takes `low_precision_attention`. `workspace` (the common
    signature) is not used: these maps are freed as soon as they are averaged, which keeps the
    memory between frames at what float32 has always needed."""
    in_place = not q.requires_grad
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    out = None
    if attn_mask is not None:
        mask = attn_mask.to(logits.dtype)
        out = torch.cat([_softmax(logits[:, h:h + 1] + mask, in_place) @ v[:, h:h + 1]
                         for h in range(logits.shape[1])], dim=1)
    weights = _softmax(logits, in_place)
    if out is None:
        out = weights @ v
    averaged = weights.mean(dim=1)  # sum over heads / heads (torch's CPU mean sums, then divides)
    return out, averaged


def _softmax(logits: torch.Tensor, in_place: bool) -> torch.Tensor:
    """Softmax over the last dimension, written over `logits` when `in_place`."""
    return torch.softmax(logits, dim=-1, out=logits) if in_place else logits.softmax(dim=-1)


def self_only_mask(tokens: int, device: torch.device) -> torch.Tensor:
    """Additive mask that leaves only the diagonal of the attention logits untouched."""
    return (1.0 - torch.eye(tokens, device=device)) * SELF_ONLY_PENALTY
