"""scripts/average_weights.py: the mean of checkpoints' weights, checked tensor by tensor; mismatches refused."""

from __future__ import annotations

import torch

from conftest import load_script, randomize_
from seggpt.checkpoint import load_model, save_native
from seggpt.config import vit_tiny
from seggpt.modeling import SegGPT


def _saved(path, seed, **overrides):
    torch.manual_seed(seed)
    save_native(randomize_(SegGPT(vit_tiny(**overrides)), std=0.1), path)
    return str(path)


def test_mean_of_three_and_refusals(tmp_path, capsys):
    avg = load_script("average_weights", "scripts")
    paths = [_saved(tmp_path / f"m{i}.safetensors", i) for i in range(3)]
    out = tmp_path / "mean.safetensors"
    assert avg.main([str(out), *paths]) == 0
    mean = load_model(out).state_dict()
    models = [load_model(p).state_dict() for p in paths]
    for k, v in mean.items():
        expected = (models[0][k].double() + models[1][k].double() + models[2][k].double()) / 3
        torch.testing.assert_close(v.double(), expected, atol=1e-6, rtol=0, msg=k)
    assert not torch.equal(mean["mask_token"], models[0]["mask_token"])
    # OUT kept unless --overwrite; another architecture named; one checkpoint is not an average.
    assert avg.main([str(out), *paths]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    other = _saved(tmp_path / "deep.safetensors", 0, embed_dim=48)
    assert avg.main([str(tmp_path / "x.safetensors"), paths[0], other]) == 2
    assert "another architecture" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
    assert avg.main([str(tmp_path / "y.safetensors"), paths[0]]) == 2
    assert "at least two" in capsys.readouterr().err
