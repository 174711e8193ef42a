"""`tagclip classify` with a damaged text-feature cache: the same scores as with a clean one."""
from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np

from ..conftest import IMAGES, WEIGHTS
from ..core.test_text import DAMAGE, damage
from .helpers import run_cli


def test_classify_with_a_damaged_cache_gives_the_clean_scores(tmp_path, text_cache_dir):
    image = os.path.join(IMAGES, "chelsea.jpg")
    args = ("classify", image, "--vocab", "voc", "--weights", WEIGHTS, "--device", "cpu")
    clean = run_cli(*args, "--json", str(tmp_path / "clean.json"), cache=text_cache_dir)
    assert clean.returncode == 0, clean.stderr
    damaged = tmp_path / "damaged"
    shutil.copytree(text_cache_dir, damaged)  # holds every name of this run, and maybe more
    entries = sorted(p.relative_to(damaged) for p in damaged.rglob("*.npy"))
    assert len(entries) >= 2 * len(DAMAGE)  # voc has 45 names: each damage at least twice
    for i, entry in enumerate(entries):  # every entry, each kind of damage in turn
        intact_other = pathlib.Path(text_cache_dir) / entries[(i + 1) % len(entries)]
        damage(DAMAGE[i % len(DAMAGE)], damaged / entry, intact_other, tmp_path)
    done = run_cli(*args, "--json", str(tmp_path / "damaged.json"), cache=str(damaged))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "pickle-ran").exists()
    expected = json.loads((tmp_path / "clean.json").read_text())["results"][0]
    result = json.loads((tmp_path / "damaged.json").read_text())["results"][0]
    np.testing.assert_allclose(result["scores"], expected["scores"], rtol=0, atol=1e-6)
    assert [t["label"] for t in result["tags"]] == [t["label"] for t in expected["tags"]]
