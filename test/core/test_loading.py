"""Model loading: the fixture loads like a user's checkpoint; failures are one clear sentence.

The default path (open_clip's download of `ViT-B-16`/`openai`) is served offline from a random
ViT-B/16 laid out in a temporary Hugging Face hub cache exactly where open_clip looks for it.
huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once, at import, so that load runs in a
fresh process (this module run as a script) started with those variables set, as a user's node
would be; nothing is monkeypatched.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME
from open_clip.pretrained import get_pretrained_cfg
from open_clip.transformer import ResidualAttentionBlock
from safetensors.torch import save_file

from tagclip_ros.core import WeightsError, load_model
from tagclip_ros.core.loading import from_model

from ..conftest import REPO, WEIGHTS, code_running_checkpoint

TINY = "ViT (patch 16, width 64, 12 blocks, 1 head, 224 px, QuickGELU)"
B16_QUICK_GELU = "ViT-B/16 (width 768, 12 blocks, 12 heads, 224 px, QuickGELU)"
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex revision will do


def test_architecture_is_read_from_the_checkpoint(loaded):
    assert loaded.patch_size == 16 and loaded.image_size == 224
    assert len(loaded.model.visual.transformer.resblocks) == 12
    reference = torch.load(WEIGHTS, map_location="cpu")
    assert torch.equal(loaded.model.visual.proj, reference["visual.proj"])  # no float16 rounding


def test_torchscript_archive_and_wrapped_state_dict_load(loaded, tmp_path):
    reference = torch.load(WEIGHTS, map_location="cpu")

    class Holder(torch.nn.Module):  # a TorchScript archive with OpenAI's parameter names
        def __init__(self):
            super().__init__()
            for key, value in reference.items():
                self.register_buffer(key.replace(".", "__"), value)

        def forward(self, x):  # code the archive carries: reading the weights never calls it
            raise RuntimeError("the archive's code ran")
    scripted = torch.jit.script(Holder())
    names = {k.replace(".", "__"): k for k in reference}
    path = tmp_path / "openai.pt"
    scripted.save(str(path))
    from tagclip_ros.core.loading import _read_state_dict
    read = _read_state_dict(str(path))
    assert {names[k] for k in read} == set(reference)
    with pytest.raises(Exception, match="the archive's code ran"):
        torch.jit.load(str(path))(torch.zeros(1))  # the test is live: calling it runs the code


@pytest.mark.parametrize("shell", [False, True])
def test_a_checkpoint_whose_pickle_runs_code_is_refused_unrun(tmp_path, shell):
    path, marker = code_running_checkpoint(str(tmp_path), shell=shell)
    with pytest.raises(WeightsError) as error:
        load_model(weights=path)
    assert not os.path.exists(marker)
    # in our words: torch's own advises loading with weights_only=False, which would run it
    message = str(error.value)
    assert message.startswith(f"weights file {path!r} could not be read as a torch checkpoint: "
                              "it holds pickled objects other than tensors")
    assert message.endswith("(docs/security.md)") and "weights_only" not in message
    torch.load(path, weights_only=False)  # the test is live: a plain unpickling runs it
    assert os.path.exists(marker)


def test_missing_weights_name_the_setting(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*weights"):
        load_model(weights=str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("content", [b"garbage" * 100, b""])
def test_corrupt_weights_are_reported(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="could not be read"):
        load_model(weights=str(path))


def test_truncated_checkpoint_is_reported(tmp_path):
    data = open(WEIGHTS, "rb").read()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(weights=str(path))


def test_wrong_kind_of_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match="not an OpenAI-format"):
        load_model(weights=str(path))


def test_offline_without_local_weights_says_what_to_set(tmp_path, encode_inputs):
    result = _run_default_load(tmp_path / "empty-hub-cache", encode_inputs, tmp_path / "out.pt")
    assert result["error"] == ("could not get pretrained weights ViT-B-16/openai: they are not in "
                               "the Hugging Face cache and HF_HUB_OFFLINE is set; set the weights "
                               "path (--weights or TAGCLIP_WEIGHTS; for the node, restart it with "
                               "-p model.weights:=PATH) to a local checkpoint")


def test_quoted_errors_are_shortened_between_words():
    from tagclip_ros.core.loading import _reason
    reason = _reason(RuntimeError("\x1b[1mbold\x1b[0m " + "abcdefghij " * 40 + "\nsecond line"))
    assert reason.startswith("bold abcdefghij") and reason.endswith("abcdefghij ...")
    assert len(reason) <= 200


def test_bad_device_and_precision():
    with pytest.raises(ValueError, match="device"):
        load_model(weights=WEIGHTS, device="tpu")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        load_model(weights=WEIGHTS, device="cpu", precision="fp16")


def test_no_weights_at_all_is_refused():
    with pytest.raises(WeightsError, match="no weights are set; set the pretrained tag"):
        load_model(pretrained="", device="cpu")


# ---- the network actually built, named in logs and diagnostics ----------------------------------
def test_description_names_the_built_network_and_its_source(loaded):
    assert loaded.description == f"{TINY} from {WEIGHTS}"
    wrapped = from_model(copy.deepcopy(loaded.model), description="random weights (seed 3)")
    assert wrapped.description == f"{TINY}, random weights (seed 3)"


def test_file_given_as_pretrained_loads_like_a_weights_file():
    loaded = load_model("ViT-B-16", pretrained=WEIGHTS, device="cpu")
    assert loaded.description == f"{TINY} from {WEIGHTS}"


# ---- default path: open_clip's ViT-B-16/openai download, served offline -------------------------
@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    """One random ViT-B/16 (float16, as OpenAI ships it) in the two places it can come from: a
    hub cache holding open_clip's `ViT-B-16`/`openai` download, and an OpenAI-format .pt file.
    The ~600 MB are removed after the module."""
    root = tmp_path_factory.mktemp("vit-b16")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu")
    state_dict = {k: v.half() for k, v in model.state_dict().items()}
    _serve_as_open_clip_download(root / "hub-cache", state_dict, "ViT-B-16", "openai")
    torch.save(state_dict, root / "openai-format.pt")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def encode_inputs(tmp_path_factory) -> Path:
    """A fixed random 224 px image and two tokenised prompts, in a file a subprocess can read."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("inputs") / "inputs.pt"
    torch.save({"image": torch.randn(1, 3, 224, 224),
                "text": open_clip.tokenize(["a photo of a cat", "a dog on the grass"])}, path)
    return path


@pytest.fixture(scope="module")
def default_load(vit_b16, encode_inputs) -> dict:
    return _run_default_load(vit_b16 / "hub-cache", encode_inputs, vit_b16 / "default-load.pt")


def test_default_path_builds_quick_gelu_in_every_block(default_load):
    assert "error" not in default_load, default_load.get("error")
    assert default_load["activations"] == ["QuickGELU"] * 24  # 12 vision + 12 text blocks
    assert default_load["description"] == (f"{B16_QUICK_GELU} from open_clip's ViT-B-16 "
                                           "'openai' weights")


def test_default_path_computes_what_the_local_file_path_computes(default_load, vit_b16,
                                                                 encode_inputs):
    local = load_model(weights=str(vit_b16 / "openai-format.pt"), device="cpu")
    assert local.description == f"{B16_QUICK_GELU} from {vit_b16 / 'openai-format.pt'}"
    expected = _encode(local.model, torch.load(encode_inputs))
    for key in ("image", "text"):
        torch.testing.assert_close(default_load[key], expected[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("model, tag, quick_gelu", [
    ("ViT-B-16", "openai", True), ("ViT-B/16", "OpenAI", True), ("ViT-L-14", "openai", True),
    ("ViT-B-16", "dfn2b", True),  # open_clip-trained, with QuickGELU
    ("ViT-B-16", "laion2b_s34b_b88k", False), ("ViT-B-16", "no-such-tag", False)])
def test_pretrained_tags_keep_the_activation_they_were_trained_with(model, tag, quick_gelu):
    from tagclip_ros.core.loading import _tag_uses_quick_gelu
    assert _tag_uses_quick_gelu(model, tag) is quick_gelu


def _serve_as_open_clip_download(cache: Path, state_dict: dict, model: str, tag: str) -> None:
    """Store `state_dict` as huggingface_hub would have after downloading what open_clip fetches
    for `model`/`tag`: the repo and file named by open_clip's pretrained config (safetensors,
    tried first), as a blob named by its sha256, a snapshot link to it and refs/main."""
    repo_id, filename = os.path.split(get_pretrained_cfg(model, tag)["hf_hub"])
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    incoming = repo / "blobs" / "incoming"
    save_file(state_dict, str(incoming))
    blob = incoming.rename(repo / "blobs" / _sha256(incoming))
    snapshot = repo / "snapshots" / HUB_COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / (filename or HF_SAFE_WEIGHTS_NAME)).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(HUB_COMMIT)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run_default_load(hub_cache: Path, inputs: Path, out: Path) -> dict:
    """`load_model("ViT-B-16", "openai")` in a fresh offline process whose hub cache is
    `hub_cache` (the user's own cache and settings are never seen)."""
    env = {**os.environ, "HF_HOME": str(out.parent / "hf-home"), "HF_HUB_CACHE": str(hub_cache),
           "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "test.core.test_loading", str(inputs), str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


def _encode_with_default_model(inputs: str, out: str) -> None:
    """The subprocess's side: save the default model's features and activations, or its error."""
    try:
        loaded = load_model("ViT-B-16", "openai", device="cpu")
    except WeightsError as exc:
        torch.save({"error": str(exc)}, out)
        return
    torch.save({**_encode(loaded.model, torch.load(inputs)), "description": loaded.description,
                "activations": _activations(loaded.model)}, out)


def _encode(model: torch.nn.Module, inputs: dict) -> dict:
    with torch.no_grad():
        return {"image": model.encode_image(inputs["image"]),
                "text": model.encode_text(inputs["text"])}


def _activations(model: torch.nn.Module) -> list[str]:
    """The MLP activation of every transformer block, vision tower first."""
    return [type(block.mlp.gelu).__name__ for block in model.modules()
            if isinstance(block, ResidualAttentionBlock)]


# ---- open_clip training checkpoints -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory) -> dict:
    """Small architectures registered with open_clip through its own config mechanism, under
    names unique to this run (the registry is global): one per activation, and a ResNet."""
    folder = tmp_path_factory.mktemp("open-clip-configs")
    stem = f"tagclip-test-{uuid.uuid4().hex[:8]}"
    text = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
    vit = {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16}
    resnet = {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8}
    configs = {"gelu": {"embed_dim": 32, "vision_cfg": vit, "text_cfg": text},  # no quick_gelu
               "quickgelu": {"embed_dim": 32, "quick_gelu": True, "vision_cfg": vit,
                             "text_cfg": text},
               "resnet": {"embed_dim": 32, "vision_cfg": resnet, "text_cfg": text}}
    for kind, config in configs.items():
        (folder / f"{stem}-{kind}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return {kind: f"{stem}-{kind}" for kind in configs}


@pytest.mark.parametrize("kind, activation", [("gelu", "GELU"), ("quickgelu", "QuickGELU")])
def test_open_clip_checkpoint_loads_as_trained(tiny_configs, tmp_path, kind, activation):
    name = tiny_configs[kind]
    # In the state load_model leaves a model in: with parameters that require grad, torch's
    # MultiheadAttention takes another kernel (1e-7 apart) even under no_grad.
    trained = open_clip.create_model(name).eval().requires_grad_(False)
    path = _save_like_open_clip_training(trained, tmp_path / "epoch_1.pt")
    loaded = load_model(model_name=name, weights=str(path), device="cpu")
    assert _activations(loaded.model) == [activation] * 4
    assert loaded.description == (f"ViT (patch 16, width 64, 2 blocks, 1 head, 64 px, "
                                  f"{activation}) from {path}")
    torch.manual_seed(2)
    inputs = {"image": torch.randn(2, 3, 64, 64),
              "text": open_clip.tokenize(["a cat", "two dogs"])}
    got, expected = _encode(loaded.model, inputs), _encode(trained, inputs)
    for key in ("image", "text"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)


def test_open_clip_checkpoint_needs_a_model_name_open_clip_knows(tiny_configs, tmp_path):
    path = _save_like_open_clip_training(open_clip.create_model(tiny_configs["gelu"]),
                                         tmp_path / "epoch_1.pt")
    with pytest.raises(WeightsError) as error:
        load_model(model_name="no-such-architecture", weights=str(path), device="cpu")
    assert str(error.value) == ("open_clip knows no model 'no-such-architecture'; set the model "
                                "name (--model, or model.name for the node) to one of "
                                "open_clip.list_models(), such as ViT-B-16")
    with pytest.raises(WeightsError, match="does not fit open_clip's 'ViT-B-32'; set the model"):
        load_model(model_name="ViT-B-32", weights=str(path), device="cpu")


def test_only_a_clip_vit_is_accepted(tiny_configs):
    with pytest.raises(WeightsError, match="is not a plain CLIP ViT"):
        from_model(open_clip.create_model(tiny_configs["resnet"]))


def _save_like_open_clip_training(model: torch.nn.Module, path: Path) -> Path:
    """The checkpoint open_clip's training loop writes: DDP's `module.` prefix on every key."""
    optimizer = torch.optim.AdamW(model.parameters())
    torch.save({"epoch": 1, "name": "test-run", "optimizer": optimizer.state_dict(),
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


if __name__ == "__main__":  # the fresh process of _run_default_load
    _encode_with_default_model(*sys.argv[1:])
