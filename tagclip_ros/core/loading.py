"""Building a CLIP model from a named pretrained tag or a local checkpoint file.

Checkpoints come in three shapes, all accepted: OpenAI's TorchScript archive (`ViT-B-16.pt`),
an OpenAI-format plain state dict (its architecture is read off the tensor shapes, so narrow
test checkpoints load through the same path), and open_clip training checkpoints
(`{"state_dict": ...}`), which are loaded into the architecture named by `model_name`.
The MLP activation follows the weights: OpenAI's were trained with QuickGELU, so every path that
loads them builds QuickGELU (open_clip's plain `ViT-B-16` config has GELU and would only warn);
open_clip-trained weights keep the activation of their config or pretrained tag.
Every failure becomes a `WeightsError` whose message is one sentence naming what to set.
Which file to load when none is given is `weights_setting`'s rule ($TAGCLIP_WEIGHTS), shared by
every entry point.
"""
from __future__ import annotations

import hashlib
import os
import re
import textwrap
import zipfile
from dataclasses import dataclass
from functools import lru_cache

import open_clip
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError
from open_clip.constants import HF_WEIGHTS_NAME
from open_clip.factory import parse_model_name
from open_clip.model import CLIP, build_model_from_openai_state_dict
from open_clip.pretrained import _get_safe_alternatives, get_pretrained_cfg, is_pretrained_cfg
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from .device import precision_name, resolve_device, resolve_precision
from .errors import WeightsError
from .precision import apply_precision

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# (width, blocks, heads) of the standard ViT sizes, to name a built network only when it is one.
VIT_SIZES = {(768, 12, 12): "B", (1024, 24, 16): "L", (1280, 32, 16): "H"}
WEIGHTS_VARIABLE = "TAGCLIP_WEIGHTS"
# model.weights is read-only (docs/security.md): a running node cannot be given another file.
SET_WEIGHTS = (f"set the weights path (--weights or {WEIGHTS_VARIABLE}; for the node, restart it "
               "with -p model.weights:=PATH)")
SET_MODEL = "set the model name (--model, or model.name for the node)"
HUB_PROBE_TIMEOUT_S = 5.0  # the one request that tells whether the hub can be reached
REASON_CHARS = 200  # of another library's error text quoted in one of ours
TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# torch's refusal of a pickle its weights-only loader does not allow says to load it with
# weights_only=False, which would run the pickle's code: this is said instead.
PICKLE_REFUSED = ("it holds pickled objects other than tensors, which are refused unread as "
                  "they could run code")


def weights_setting(given: str | None) -> str | None:
    """The weights file an entry point loads: the one given (--weights, model.weights), else
    $TAGCLIP_WEIGHTS, else None (the pretrained tag's weights). One rule, so that the variable
    means the same for every `tagclip` verb, the node and run.sh."""
    return given or os.environ.get(WEIGHTS_VARIABLE) or None


@dataclass
class LoadedModel:
    """A CLIP model ready for inference, with what the rest of the core needs to know of it."""

    model: CLIP
    device: torch.device
    dtype: torch.dtype  # of the vision tower's matrix products; all else is float32
    weights_id: str  # stable identity of the weights, used to key the text-feature cache
    description: str
    compile: bool = False  # compile the vision tower's fixed-shape passes (core/vit.py)

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.conv1.kernel_size[0])

    @property
    def image_size(self) -> int:
        """Side of the square input the positional embeddings were trained for (224)."""
        return _trained_image_size(self.model.visual)

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])


def load_model(model_name: str = "ViT-B-16", pretrained: str = "openai",
               weights: str | None = None, device: str = "auto",
               precision: str = "fp32", compile: bool = False) -> LoadedModel:
    """Load CLIP for inference; `weights` (a local file) wins over `pretrained` (an open_clip tag,
    or a file path as open_clip also accepts there). `compile`: see `VisionTower`."""
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    weights = weights or _file_given_as_pretrained(model_name, pretrained)
    if weights:
        model, weights_id = _load_local(weights, model_name), file_fingerprint(weights)
        source = f"from {weights}"
    elif pretrained:
        model, weights_id = _load_pretrained(model_name, pretrained), f"{model_name}:{pretrained}"
        source = f"from open_clip's {model_name} {pretrained!r} weights"
    else:
        raise WeightsError("no weights are set; set the pretrained tag (--pretrained, or "
                           "model.pretrained for the node, e.g. 'openai') or the weights path")
    _check_plain_vit(model, f"model {model_name!r}")
    model = _place(model, dev, dtype)
    return LoadedModel(model, dev, dtype, weights_id, f"{describe_network(model)} {source}", compile)


def from_model(model: torch.nn.Module, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, weights_id: str = "in-memory",
               description: str | None = None, compile: bool = False) -> LoadedModel:
    """Wrap a CLIP built in memory (e.g. randomly initialised for a benchmark) for inference:
    moved to `device`, in eval mode, without gradients, its vision tower's matrix products in
    `dtype` (the rest in float32). `weights_id` keys the text
    cache, so give every distinct set of weights its own; `description` says where the weights
    came from (the network itself is described from the model)."""
    _check_plain_vit(model, f"a {type(model).__name__}")
    dev = torch.device(device)
    resolve_precision(precision_name(dtype), dev)  # the same refusals as load_model's
    model = _place(model, dev, dtype)
    source = description or f"in memory ({weights_id})"
    return LoadedModel(model, dev, dtype, weights_id, f"{describe_network(model)}, {source}", compile)


def _place(model: CLIP, device: torch.device, dtype: torch.dtype) -> CLIP:
    """The model on `device`, for inference, in float32 but for the vision tower's matrix
    products, which take `dtype` (core/precision.py)."""
    model = model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    return apply_precision(model, dtype)


def describe_network(model: CLIP) -> str:
    """The vision transformer actually built, read off its modules so that logs and diagnostics
    cannot name another network: e.g. "ViT-B/16 (width 768, 12 blocks, 12 heads, 224 px,
    QuickGELU)"; a geometry that is no standard ViT size is given by its figures alone."""
    visual = model.visual
    blocks = visual.transformer.resblocks
    patch, width = int(visual.conv1.kernel_size[0]), int(visual.conv1.out_channels)
    heads = int(blocks[0].attn.num_heads)
    size = VIT_SIZES.get((width, len(blocks), heads))
    figures = (f"width {width}, {len(blocks)} blocks, {heads} head{'s' * (heads != 1)}, "
               f"{_trained_image_size(visual)} px, {_activation(model)}")
    return f"ViT-{size}/{patch} ({figures})" if size else f"ViT (patch {patch}, {figures})"


def describe_pretrained(model_name: str = "ViT-B-16", pretrained: str = "openai") -> str:
    """The network `load_model(model_name, pretrained)` builds for an open_clip tag, described
    as `describe_network` does, without downloading the weights (randomly initialised)."""
    _check_known_architecture(model_name)
    if not is_pretrained_cfg(_config_name(model_name), pretrained):
        raise WeightsError(f"open_clip has no pretrained tag {pretrained!r} for {model_name!r}")
    model = open_clip.create_model(model_name, pretrained=None, device="cpu",
                                   force_quick_gelu=_tag_uses_quick_gelu(model_name, pretrained))
    return describe_network(model)


def _activation(model: torch.nn.Module) -> str:
    """Name of the MLP activation of every transformer block (both towers)."""
    names = sorted({type(block.mlp.gelu).__name__ for block in model.modules()
                    if isinstance(block, ResidualAttentionBlock)})
    return "/".join(names) or "unknown activation"


def _trained_image_size(visual: VisionTransformer) -> int:
    """Side of the square input the positional embeddings were trained for (224)."""
    grid = int(round((visual.positional_embedding.shape[0] - 1) ** 0.5))
    return grid * int(visual.conv1.kernel_size[0])


def _check_plain_vit(model: torch.nn.Module, what: str) -> None:
    """TagCLIP reads attention maps out of open_clip's own vision transformer, so only a CLIP
    with that tower (not a ResNet, timm or Hugging Face one) will do."""
    if not (isinstance(model, CLIP) and isinstance(model.visual, VisionTransformer)):
        raise WeightsError(f"{what} is not a plain CLIP ViT; TagCLIP needs one such as ViT-B-16")


def _file_given_as_pretrained(model_name: str, pretrained: str) -> str | None:
    """A file path passed as `pretrained` (open_clip allows it) goes through the local loader,
    which builds OpenAI-format files with QuickGELU."""
    if pretrained and not is_pretrained_cfg(_config_name(model_name), pretrained) \
            and os.path.isfile(pretrained):
        return pretrained
    return None


def _load_pretrained(model_name: str, tag: str) -> torch.nn.Module:
    """open_clip's weights for `tag` (downloaded on first use), in a network with the activation
    they were trained with."""
    _check_known_architecture(model_name)
    check_download_possible(model_name, tag)
    try:
        return open_clip.create_model(model_name, pretrained=tag, device="cpu",
                                      force_quick_gelu=_tag_uses_quick_gelu(model_name, tag))
    except Exception as exc:  # network, hub and unknown-tag errors all end here
        raise WeightsError(
            f"could not get pretrained weights {model_name}/{tag} ({_reason(exc)}); "
            f"on a machine without network access {SET_WEIGHTS} to a local checkpoint") from None


def check_download_possible(model_name: str, tag: str) -> None:
    """Refuse at once, in one sentence, weights that must come from the Hugging Face hub when
    they are not in its cache and the hub is off (HF_HUB_OFFLINE) or does not answer one short
    request: huggingface_hub would retry every file open_clip asks for, for about a minute, and
    log each try. Weights in the cache are loaded without asking the network here."""
    hub = _hub_files(model_name, tag)
    if hub is None:
        return
    repo, names = hub
    if any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
        return
    failed = f"could not get pretrained weights {model_name}/{tag}"
    if hub_constants.is_offline_mode():
        raise WeightsError(f"{failed}: they are not in the Hugging Face cache and HF_HUB_OFFLINE "
                           f"is set; {SET_WEIGHTS} to a local checkpoint")
    try:
        get_hf_file_metadata(hf_hub_url(repo, names[0]), timeout=HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return  # the hub answers (whether with this file or not): open_clip takes it from here
    except Exception as exc:  # no connection, no name resolution, a timeout
        raise WeightsError(f"{failed}: {hub_constants.ENDPOINT} cannot be reached ({_reason(exc)}) "
                           f"and they are not in the Hugging Face cache; {SET_WEIGHTS} to a local "
                           "checkpoint") from None


def _hub_files(model_name: str, tag: str) -> tuple[str, list[str]] | None:
    """(repository, file names in the order open_clip tries them) of the weights open_clip
    takes from the Hugging Face hub for `model_name` and `tag`; None for weights from elsewhere."""
    schema, identifier = parse_model_name(model_name)
    if schema == "hf-hub":
        location = f"{identifier}/"
    elif schema is None:  # "org/repo/file", or "org/repo/" for open_clip's default file name
        location = get_pretrained_cfg(_config_name(model_name), tag).get("hf_hub", "")
    else:
        location = ""  # local-dir:
    if not location:
        return None
    repo, filename = os.path.split(location)
    filename = filename or HF_WEIGHTS_NAME
    return repo, [*_get_safe_alternatives(filename), filename]


def _tag_uses_quick_gelu(model_name: str, tag: str) -> bool:
    """open_clip's own record of whether the weights of `tag` were trained with QuickGELU: true
    for every OpenAI tag (and some open_clip-trained ones, such as dfn2b and metaclip), while
    the plain configs (`ViT-B-16`) build GELU whatever the tag."""
    return bool(get_pretrained_cfg(_config_name(model_name), tag).get("quick_gelu", False))


def _config_name(model_name: str) -> str:
    """The name open_clip looks its built-in configs up by ("ViT-B/16" is "ViT-B-16")."""
    return model_name.replace("/", "-")


def _check_known_architecture(model_name: str) -> None:
    """Refuse, in one sentence, a model name open_clip has no config for (its own error lists
    every config it has)."""
    schema, _ = parse_model_name(model_name)  # hf-hub: and local-dir: names bring their config
    if schema is None and open_clip.get_model_config(_config_name(model_name)) is None:
        raise WeightsError(f"open_clip knows no model {model_name!r}; {SET_MODEL} to one of "
                           "open_clip.list_models(), such as ViT-B-16")


def _load_local(path: str, model_name: str) -> torch.nn.Module:
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist; {SET_WEIGHTS} to a CLIP "
                           "checkpoint")
    state_dict = _read_state_dict(path)
    try:
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            return _load_open_clip_checkpoint(state_dict["state_dict"], model_name, path)
        return _build_from_openai_state_dict(state_dict)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"weights file {path!r} is not a CLIP checkpoint this loader knows "
                           f"({_reason(exc)}); give an OpenAI .pt or an open_clip "
                           "checkpoint") from None


def _read_state_dict(path: str) -> dict:
    """Tensors of an OpenAI TorchScript archive or a torch-saved (state) dict."""
    try:
        if zipfile.is_zipfile(path) and _is_torchscript(path):
            return torch.jit.load(path, map_location="cpu").state_dict()
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        unreadable = f"weights file {path!r} could not be read as a torch checkpoint"
        if _is_pickle_refusal(exc):
            raise WeightsError(f"{unreadable}: {PICKLE_REFUSED}; save the model's state dict "
                               "instead (docs/security.md)") from None
        raise WeightsError(f"{unreadable} ({_reason(exc)}); it may be truncated or "
                           "corrupt") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"weights file {path!r} holds a {type(obj).__name__}, not a state dict")
    return obj


def _is_torchscript(path: str) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _build_from_openai_state_dict(state_dict: dict) -> CLIP:
    """An OpenAI-format state dict, its architecture read off the tensor shapes, built with the
    QuickGELU that OpenAI's weights were trained with."""
    if "visual.proj" not in state_dict:
        raise WeightsError("the checkpoint has no 'visual.proj': it is not an OpenAI-format "
                           "CLIP ViT state dict")
    tensors = {k: v for k, v in state_dict.items() if k not in OPENAI_EXTRA_KEYS}
    model = build_model_from_openai_state_dict(dict(tensors), quick_gelu=True)
    # open_clip's builder stores the weights in float16; reload them at full precision so a
    # float32 checkpoint keeps every bit (OpenAI's own .pt files are float16 anyway).
    model.float().load_state_dict({k: v.float() for k, v in tensors.items()})
    return model


def _load_open_clip_checkpoint(state_dict: dict, model_name: str, path: str) -> torch.nn.Module:
    """An open_clip training checkpoint, loaded into open_clip's `model_name` config so that the
    network (activation included) is the one it was trained as; the `module.` prefixes of
    DDP training are dropped."""
    _check_known_architecture(model_name)
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        raise WeightsError(f"weights file {path!r} does not fit open_clip's {model_name!r}; "
                           f"{SET_MODEL} to the architecture it was trained as") from None
    return model


@lru_cache(maxsize=16)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def file_fingerprint(path: str) -> str:
    """Content hash of a weights file (memoised by path, size and mtime)."""
    stat = os.stat(path)
    return "sha256:" + _hash_file(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def _reason(exc: BaseException) -> str:
    """Another library's error, to quote in one of our sentences: its first line, without
    terminal escapes, shortened between words; torch's refusal of a pickle in our words."""
    if _is_pickle_refusal(exc):
        return PICKLE_REFUSED
    lines = TERMINAL_ESCAPES.sub("", str(exc)).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return textwrap.shorten(lines[0], REASON_CHARS, placeholder=" ...")


def _is_pickle_refusal(exc: BaseException) -> bool:
    """Whether `exc` is torch's weights-only loader refusing what a pickle holds."""
    text = str(exc)
    return text.startswith("Weights only load failed") or "weights_only" in text
