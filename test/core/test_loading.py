"""Model loading: the fixture loads like a user's checkpoint; failures are one clear sentence."""
from __future__ import annotations

import pytest
import torch

from tagclip_ros.core import WeightsError, load_model

from ..conftest import WEIGHTS


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

        def forward(self, x):
            return x
    scripted = torch.jit.script(Holder())
    names = {k.replace(".", "__"): k for k in reference}
    path = tmp_path / "openai.pt"
    scripted.save(str(path))
    from tagclip_ros.core.loading import _read_state_dict
    read = _read_state_dict(str(path))
    assert {names[k] for k in read} == set(reference)


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


def test_offline_without_local_weights_says_what_to_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="weights"):
        load_model("ViT-B-16", "openai", device="cpu")


def test_bad_device_and_precision():
    with pytest.raises(ValueError, match="device"):
        load_model(weights=WEIGHTS, device="tpu")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        load_model(weights=WEIGHTS, device="cpu", precision="fp16")
