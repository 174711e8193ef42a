"""Classify, then segment: a label mask for the tags of an image, after CLIP-ES (Lin et al.,
CVPR 2023) as the TagCLIP paper uses it (see ../shared/design/algorithm.md).

Two modes share the last step, `label_mask`:

- `ClipEsSegmenter` (the paper's numbers): Grad-CAM of each tag's softmax probability over
  [tags + background names] at the last block's ln_1 output, refined with a class-aware
  attention affinity restricted to the boxes around each CAM. The official code runs one
  backward pass per tag; here blocks 1..11 run once without gradients and every tag's
  gradient comes out of one batched forward and backward pass of the last block alone (the
  per-tag results are the same, see `ClipEsSegmenter.tag_gradients`).
- `dmar_segment` (faster, gradient-free): the refined DMAR map that TagCLIP computed anyway
  while classifying, so a mask costs only an upsampling and an argmax (milliseconds), with no
  forward or backward pass. It is not what the paper evaluates for segmentation (its maps are
  patch-level class probabilities rather than Grad-CAMs, and get no CLIP-ES box-restricted
  affinity), and its mIoU has not been measured here; it is an explicit option and never
  replaces the CLIP-ES mode silently.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np
import torch

from .boxes import box_mask, contour_boxes
from .dataset import CAM_STORAGE_DTYPE
from .loading import LoadedModel
from .precision import matmul_weights
from .settings import CLIPES_BACKGROUND, SegmentationSettings, default_cache_dir
from .tagclip import AttentionVote
from .tags import TagResult
from .text import TextFeatureCache
from .transform import prepare_image
from .vit import VisionTower
from .vocab import Vocabulary, VocabularyStage

# Added to the maximum before dividing in every min-max normalisation, as in the official
# `scale_cam_image`: it keeps an all-zero CAM at zero instead of dividing by zero.
NORMALISE_EPSILON = 1e-7

# Column-then-row normalisations of the attention before symmetrising (the official loop runs
# one, then two more).
SINKHORN_ROUNDS = 3

# Rows of the label mask decided at a time: bounds the copies the argmax across maps makes.
MASK_BAND_ROWS = 128

# Tags whose gradients come out of one pass of the last block (on that many copies of it):
# bounds memory, since each copy keeps its activations for the backward pass ...
TAGS_PER_PASS = 4
# ... and so does a limit on the tokens of all copies together: 4 copies up to 640×640 (every
# image of the paper's datasets), fewer for larger images, down to one (as the official code
# runs every tag). A copy of a 1280×720 image keeps ~280 MB with ViT-B/16.
TOKENS_PER_PASS = 4 * 1601


def tags_per_pass(tokens: int) -> int:
    """How many tags (copies of the last block) one gradient pass takes at `tokens` tokens."""
    return max(1, min(TAGS_PER_PASS, TOKENS_PER_PASS // tokens))


@dataclass
class Trunk:
    """Blocks 1..11 of a pass over an image, as CLIP-ES needs them: the residual stream
    entering the last block and the attention collected by `ClipEsSegmenter.trunk_recorder`."""

    last_block_input: torch.Tensor  # (1, tokens, width)
    attention: AttentionVote


@dataclass
class Segmentation:
    """Per-tag maps and the label mask of one image.

    The maps are kept on the patch grid and upsampled to the image's size only when `cams` is
    read: at image size they take 4 bytes per pixel and tag (660 MB for 20 tags on a 4K frame),
    which the node and `tagclip overlay` never read."""

    class_indices: list[int]  # vocabulary index of each tag (0-based), the order of the maps
    grid_maps: np.ndarray = field(repr=False)  # (tags, rows, cols) float32 in [0, 1]
    mask: np.ndarray          # (H, W) uint16: 0 = background, class index + 1 for a tag

    @cached_property
    def cams(self) -> np.ndarray:
        """(tags, H, W) float32 in [0, 1]: the refined CAMs at image size (computed once)."""
        return upsample_maps(self.grid_maps, self.mask.shape)


def label_mask(cams: np.ndarray, class_indices: Sequence[int],
               background_power: float | None) -> np.ndarray:
    """Label mask from per-tag maps (tags, H, W) in [0, 1], by the paper's evaluation rule
    (CLIP-ES `eval_cam.py` over the float16 maps the official pipeline stores): the maps are
    rounded to CAM_STORAGE_DTYPE, the background scores (1 − max over tags) ** background_power
    in that precision, and each pixel takes the best of [background, tags in ascending class
    order], ties going to the first. The value is 0 for background, else the class index + 1.
    Rounding decides near-ties: two tags with near-identical maps split many pixels otherwise.
    `background_power` None is COCO-Stuff's rule (`eval_cam_cocostuff.py`): no background
    channel, every pixel takes its best tag."""
    cams = np.asarray(cams)
    if cams.ndim != 3 or cams.shape[0] != len(class_indices):
        raise ValueError(f"cams of shape {cams.shape} do not hold one map per class "
                         f"({len(class_indices)} classes)")
    return label_mask_of(cams.__getitem__, class_indices, cams.shape[1:], background_power)


def label_mask_of(cam: Callable[[int], np.ndarray], class_indices: Sequence[int],
                  image_hw: tuple[int, int], background_power: float | None) -> np.ndarray:
    """`label_mask` of the maps `cam(i)` (H, W) for i in range(len(class_indices)), fetched
    one at a time straight into the float16 scores, and the rule applied band by band of
    rows (a per-pixel rule, so the same mask): the memory is 2 bytes per pixel and tag, plus
    one map, instead of a float32 stack and its copies (an argmax across maps copies them)."""
    order = np.argsort(np.asarray(class_indices, dtype=np.int64), kind="stable")
    ordered = [class_indices[i] for i in order]
    scores = np.empty((len(order) + 1, *image_hw), CAM_STORAGE_DTYPE)
    for row, i in enumerate(order, start=1):
        scores[row] = cam(int(i))  # rounded to float16 as astype rounds
    mask = np.empty(image_hw, np.uint16)
    for top in range(0, image_hw[0], MASK_BAND_ROWS):
        band = scores[:, top:top + MASK_BAND_ROWS]
        band[0] = (background_scores(band[1:], background_power) if background_power is not None
                   else -np.inf)  # never wins: every pixel takes a tag
        mask[top:top + MASK_BAND_ROWS] = mask_values(np.argmax(band, axis=0), ordered)
    return mask


def background_scores(cams: np.ndarray, background_power: float) -> np.ndarray:
    """(1 − max over tags) ** background_power per pixel, in the dtype of `cams` (tags, H, W)."""
    return np.power(1 - cams.max(axis=0, initial=0), float(background_power)).astype(cams.dtype)


def with_background(cams: np.ndarray, background_power: float) -> np.ndarray:
    """[background, tags] scores (tags + 1, H, W) in the dtype of `cams`, the background
    being (1 − max over tags) ** background_power."""
    return np.concatenate([background_scores(cams, background_power)[None], cams])


def mask_values(winner: np.ndarray, class_indices: Sequence[int]) -> np.ndarray:
    """Label mask (uint16) from indices into [background, tags]: 0, or the tag's index + 1."""
    values = np.array([0] + [int(i) + 1 for i in class_indices], dtype=np.uint16)
    return values[winner]


def normalise_rows(maps: torch.Tensor) -> torch.Tensor:
    """Each row (one map per row) shifted to start at 0 and divided by its maximum + 1e-7."""
    shifted = maps - maps.min(dim=-1, keepdim=True).values
    return shifted / (shifted.max(dim=-1, keepdim=True).values + NORMALISE_EPSILON)


def grid_maps(maps: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Patch-grid maps (tags, patches) as a float32 array (tags, rows, cols)."""
    return maps.detach().float().cpu().numpy().reshape(-1, grid[0], grid[1])


def upsample_map(small: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """One patch-grid map (rows, cols) bilinearly resized to the image, float32 (H, W).

    OpenCV's bilinear resize (pixel centres aligned, no antialiasing) is what the official code
    uses; the maps are always enlarged, so it equals torch's align_corners=False mode. The
    official code resizes to the original image's size whatever size the model saw (CLIP-ES's
    scales), so a downscaled input's maps come back at full size the same way."""
    return cv2.resize(small, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_LINEAR)


def upsample_maps(small: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Patch-grid maps (tags, rows, cols) resized to the image, float32 (tags, H, W)."""
    out = np.empty((small.shape[0], *image_hw), dtype=np.float32)
    for i, m in enumerate(small):
        out[i] = upsample_map(m, image_hw)
    return out


def segmentation_of(maps: torch.Tensor, grid: tuple[int, int], class_indices: list[int],
                    image_hw: tuple[int, int], background_power: float | None) -> Segmentation:
    """The Segmentation of normalised patch-grid maps (tags, patches): the label mask of the
    maps upsampled to `image_hw`, one map at a time (see `label_mask_of`)."""
    small = grid_maps(maps, grid)
    mask = label_mask_of(lambda i: upsample_map(small[i], image_hw), class_indices, image_hw,
                         background_power)
    return Segmentation(class_indices, small, mask)


def check_class_indices(class_indices: Sequence[int], num_classes: int) -> list[int]:
    """The tags as a list of ints; ValueError, with the reason, for an unusable list."""
    indices = [int(i) for i in class_indices]
    if not indices:
        raise ValueError("no classes to segment: give at least one tag (an image without tags "
                         "has nothing to segment; its mask would be all background)")
    bad = [i for i in indices if not 0 <= i < num_classes]
    if bad:
        raise ValueError(f"class indices {bad} are outside the vocabulary of {num_classes} classes")
    if len(set(indices)) != len(indices):
        raise ValueError(f"class indices {indices} name a class more than once")
    return indices


def grad_cam(activations: torch.Tensor, gradients: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM per tag on the patch tokens: channel weights are the gradients averaged over
    patches, the CAM is the ReLU of the weighted channel sum, min-max normalised (twice, as
    the official GradCAM does once per layer and once after aggregating its one layer).

    Both sums are taken by numpy over (1, channels, rows, cols) views of the token-major
    buffers, the layout the official code hands to numpy, so they add in its order: the CAM
    is thresholded for CLIP-ES's boxes, where the order of a float32 sum can decide a box.

    activations: (patches, channels); gradients: (tags, patches, channels) → (tags, patches)."""
    acts = _channels_first(activations, grid)
    cams = []
    for tag_gradients in gradients.detach().float().cpu():  # one copy off the device
        weights = np.mean(_channels_first(tag_gradients, grid), axis=(2, 3))
        cams.append((weights[:, :, None, None] * acts).sum(axis=1).reshape(-1))
    cams = torch.from_numpy(np.maximum(np.stack(cams), 0)).to(activations.device)
    return normalise_rows(normalise_rows(cams))


def _channels_first(tokens: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(patches, channels) float32 as a (1, channels, rows, cols) numpy view (no copy of the
    token-major memory, as CLIP-ES's reshape_transform leaves it)."""
    array = tokens.detach().float().cpu().numpy()
    return array.reshape(1, grid[0], grid[1], -1).transpose(0, 3, 1, 2)


def class_aware_affinity(attention: torch.Tensor) -> torch.Tensor:
    """CLIP-ES's affinity from mean attention among patches (patches, patches): alternately
    normalise columns and rows (SINKHORN_ROUNDS times), symmetrise, and square the result."""
    trans = attention
    for _ in range(SINKHORN_ROUNDS):
        trans = trans / trans.sum(dim=0, keepdim=True)
        trans = trans / trans.sum(dim=1, keepdim=True)
    trans = (trans + trans.T) / 2
    return trans @ trans


def refine_cams(cams: torch.Tensor, affinity: torch.Tensor, grid: tuple[int, int],
                box_threshold: float) -> torch.Tensor:
    """Affinity-propagated CAMs (tags, patches). Each tag's affinity is restricted to the
    columns inside the boxes of its CAM above box_threshold·max (the official box mask
    multiplies affinity columns, which is the same as masking the CAM before the product).
    One matrix-vector product per tag, as the official code, so the sums (and, after float16
    rounding, the label mask's near-ties) come out the same."""
    boxes = [box_mask(grid, contour_boxes(c.reshape(grid), box_threshold)).ravel()
             for c in cams.detach().float().cpu().numpy()]
    masked = torch.from_numpy(np.stack(boxes)).to(cams) * cams
    return torch.cat([(affinity @ m[:, None]).T for m in masked])


def background_names(vocabulary: Vocabulary, settings: SegmentationSettings) -> tuple[str, ...]:
    """The background names competing with the tags in the softmax: the setting when given
    (it may not repeat a class), else the vocabulary's own, else CLIP-ES's list without any
    name that is a class of the vocabulary."""
    if settings.background is not None:
        clash = set(settings.background) & set(vocabulary.classes)
        if clash:
            raise ValueError(f"names appear both as classes and as background: {sorted(clash)}")
        return tuple(settings.background)
    if vocabulary.background:
        return vocabulary.background
    return tuple(n for n in CLIPES_BACKGROUND if n not in vocabulary.classes)


def clipes_model(loaded: LoadedModel) -> LoadedModel:
    """The model with the weights CLIP-ES actually computes with.

    CLIP-ES's `build_model` casts conv, linear, attention and projection weights to float16
    before loading the checkpoint into them (then back to float32 on the CPU), so a float32
    checkpoint is rounded through float16; TagCLIP's loader does not. OpenAI's released
    weights are float16 already, so for them this returns `loaded` itself; otherwise a
    rounded copy, with its own weights identity (text features are cached apart)."""
    if loaded.dtype != torch.float32:
        return loaded  # float16 weights are rounded already; bfloat16 is not CLIP-ES's case
    if all(torch.equal(t, t.half().float()) for t in matmul_weights(loaded.model)):
        return loaded
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for tensor in matmul_weights(model):
            tensor.copy_(tensor.half().float())
    return LoadedModel(model, loaded.device, loaded.dtype, loaded.weights_id + "+fp16-rounded",
                       loaded.description + ", weights rounded through float16 as CLIP-ES loads them")


class ClipEsSegmenter(VocabularyStage):
    """CLIP-ES label masks for given tags, over a vocabulary that can be swapped while it runs.

    Text features use the single CLIP-ES template and each class's `Vocabulary.prompt_name`
    (VOC's "person with clothes,people,human" and the like). With `round_weights_fp16` (the
    default) the segmenter computes with `clipes_model(loaded)`; a `text_cache` for other
    weights is then replaced by one for those, in the same directory."""

    def __init__(self, loaded: LoadedModel, vocabulary: Vocabulary,
                 settings: SegmentationSettings = SegmentationSettings(),
                 text_cache: TextFeatureCache | None = None) -> None:
        self.loaded = clipes_model(loaded) if settings.round_weights_fp16 else loaded
        self.settings = settings
        self.vision = VisionTower(self.loaded)
        if text_cache is None or text_cache.loaded is not self.loaded:
            directory = default_cache_dir() if text_cache is None else text_cache.cache_dir
            text_cache = TextFeatureCache(self.loaded, directory)
        self.text_cache = text_cache
        self._lock = threading.Lock()
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Use `vocabulary` from the next image on; only names not yet cached are encoded."""
        templates = self.settings.templates
        background = background_names(vocabulary, self.settings)
        names = [vocabulary.prompt_name(c) for c in vocabulary.classes]
        foreground = self.text_cache.features(names, templates)
        bg = self.text_cache.features(background, templates) if background else foreground[:0]
        with self._lock:
            self._vocab_state = (vocabulary, foreground, bg)

    def segment(self, rgb: np.ndarray, class_indices: Sequence[int],
                trunk: Trunk | None = None) -> Segmentation:
        """Refined CAMs and the label mask of an RGB uint8 image (H, W, 3) for the classes
        `class_indices` (vocabulary indices, e.g. the `Tag.index` of TagCLIP's tags).
        `trunk`, from `trunk_recorder` and a TagCLIP pass over the same image, saves the
        forward pass through blocks 1..11 when `shares_trunk` allows it. An image larger than
        `settings.max_input_side` is downscaled for the model; the mask has the image's size.

        An empty list is a ValueError: there is nothing to segment."""
        with self._lock:
            vocabulary, foreground, background = self._vocab_state
        indices = check_class_indices(class_indices, len(vocabulary.classes))
        pixels = prepare_image(rgb, self.loaded.patch_size,
                               self.settings.max_input_side).to(self.loaded.device)
        grid = (pixels.shape[-2] // self.loaded.patch_size, pixels.shape[-1] // self.loaded.patch_size)
        text = torch.cat([foreground[indices], background])
        cams, attention = self.grad_cams(pixels, text, len(indices), trunk=trunk)
        refined = refine_cams(cams, class_aware_affinity(attention), grid, self.settings.box_threshold)
        return segmentation_of(normalise_rows(refined), grid, indices, rgb.shape[:2],
                               self.settings.mask_background_power)

    def trunk_recorder(self) -> AttentionVote:
        """An attention hook collecting what CLIP-ES needs from another pass's blocks."""
        # DMAR's collector also counts votes; CLIP-ES uses the plain mean (min_votes=0 below).
        return AttentionVote(len(self.vision.blocks), self.settings.affinity_start)

    def shares_trunk(self, loaded: LoadedModel, grid: tuple[int, int]) -> bool:
        """Whether blocks 1..11 of a pass by `loaded` on a `grid` image compute exactly what
        CLIP-ES would: same weights (not a float16-rounded copy) and the same positional
        table (CLIP-ES always resamples and rounds it; TagCLIP only off the 14×14 grid)."""
        return loaded is self.loaded and torch.equal(
            self.vision.positional_embedding(*grid), self.vision.positional_embedding(*grid, True))

    def grad_cams(self, pixels: torch.Tensor, text: torch.Tensor, num_tags: int,
                  batched: bool = True, trunk: Trunk | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAMs (tags, patches) of the first `num_tags` rows of `text`, and the mean
        attention among patches of the affinity blocks (patches, patches).

        Blocks before the last run once, without gradients (or not at all, given a `trunk`);
        only the last block is ever differentiated (see `tag_gradients`)."""
        last = len(self.vision.blocks) - 1
        patch = self.loaded.patch_size
        grid = (pixels.shape[-2] // patch, pixels.shape[-1] // patch)
        if trunk is None:
            attention = self.trunk_recorder()
            with torch.no_grad():
                x = self.vision.run_blocks(self.vision.embed(pixels, always_resample=True),
                                           range(last), attention)
        else:
            x, attention = trunk.last_block_input, trunk.attention
        with torch.no_grad():
            normed = self.vision.blocks[last].ln_1(x)
        gradients = self.tag_gradients(x, normed, text, num_tags, batched)
        cams = grad_cam(normed[0, 1:], gradients[:, 1:], grid)
        if not self.settings.affinity_last_block:
            return cams, attention.affinity(min_votes=0)
        blocks = len(attention.affinity_blocks)
        return cams, (attention.affinity_sum + self.last_block_attention(x)) / (blocks + 1)

    @torch.no_grad()
    def last_block_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's head-averaged attention among patches (patches, patches), given
        its input `x`, as the official COCO CLIP-ES takes it from the pass it differentiates."""
        last = len(self.vision.blocks) - 1
        maps: list[torch.Tensor] = []
        self.vision.run_blocks(x, range(last, last + 1), lambda _, a: maps.append(a[0, 1:, 1:].float()))
        return maps[0]

    def tag_gradients(self, x: torch.Tensor, normed: torch.Tensor, text: torch.Tensor,
                      num_tags: int, batched: bool = True) -> torch.Tensor:
        """Gradient of each tag's probability with respect to the last block's ln_1 output
        `normed` (1, tokens, width), given the block's input `x`: (tags, tokens, width).

        The official code runs the last block and one backward pass per tag. Batched, the
        block runs on copies of `normed` (`tags_per_pass` at a time) and tag t's probability is
        taken from copy t; copies do not interact, so one backward pass of the sum leaves in
        copy t exactly tag t's gradient. Unbatched (for checking): one forward, one backward per
        tag."""
        with torch.enable_grad():
            if batched:
                step = tags_per_pass(x.shape[1])
                return torch.cat([self._copy_gradients(x, normed, text, range(start, min(
                    start + step, num_tags))) for start in range(0, num_tags, step)])
            leaf = normed.detach().requires_grad_(True)
            probabilities = self.image_probabilities(x, leaf, text)[0]
            return torch.cat([torch.autograd.grad(probabilities[t], leaf, retain_graph=True)[0]
                              for t in range(num_tags)])

    def _copy_gradients(self, x: torch.Tensor, normed: torch.Tensor, text: torch.Tensor,
                        tags: range) -> torch.Tensor:
        """Gradients for `tags` from one forward and backward pass over that many copies."""
        leaf = normed.detach().repeat(len(tags), 1, 1).requires_grad_(True)
        probabilities = self.image_probabilities(x.expand(len(tags), -1, -1), leaf, text)
        chosen = probabilities[torch.arange(len(tags)), torch.tensor(list(tags))]
        (grads,) = torch.autograd.grad(chosen.sum(), leaf)
        return grads

    def image_probabilities(self, x: torch.Tensor, normed: torch.Tensor,
                            text: torch.Tensor) -> torch.Tensor:
        """Softmax over `text` (rows) of each image's scaled cosine similarity (batch, rows).
        The image feature is the mean over patch tokens of the last block's output after
        ln_post and the projection (the official order: ln_post per token, then the mean;
        the class token is not used)."""
        tokens = self.vision.block_from_normed(len(self.vision.blocks) - 1, x, normed)
        features = self.vision.project(tokens)[:, 1:].float().mean(dim=1)
        features = features / features.norm(dim=-1, keepdim=True)
        logits = self.loaded.model.logit_scale.exp().float() * features @ text.T
        return logits.softmax(dim=-1)


def dmar_segment(result: TagResult, image_hw: tuple[int, int],
                 settings: SegmentationSettings = SegmentationSettings(),
                 class_indices: Sequence[int] | None = None) -> Segmentation:
    """The gradient-free mode: each tag's column of TagCLIP's refined DMAR map, min-max
    normalised, bilinearly upsampled to `image_hw`, and turned into the same label mask.

    It costs no forward or backward pass beyond classification (an upsampling and an argmax),
    against a forward and a batched backward pass for `ClipEsSegmenter`; see the module
    docstring for what it gives up. `class_indices` defaults to the result's tags; only
    `settings.background_power` and `settings.background_channel` apply."""
    if class_indices is None:
        class_indices = [t.index for t in result.tags]
    indices = check_class_indices(class_indices, len(result.vocabulary.classes))
    maps = normalise_rows(result.refined[:, indices].T.float())
    return segmentation_of(maps, result.grid, indices, image_hw, settings.mask_background_power)
