"""The training configs (shipped and the SynthContext project's) load, build their data, and chain into a recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from seggpt.train import load_config
from seggpt.train.trainer import build_sources

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(ROOT / "configs").rglob("*.yaml"), *(ROOT / "projects").rglob("configs/**/*.yaml")])
RECIPE = ["embedded", "embedded_continue", "embedded_shapes", "embedded_mix"]


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.steps > 0 and cfg.batch_size > 0
    if all(s["type"] in ("synth", "real_pairs") for s in cfg.data.sources):  # the rest need datasets on disk
        sources, weights = build_sources(cfg)
        assert len(sources) == len(weights) == len(cfg.data.sources)


def test_the_embedded_recipe_chains_stage_to_stage():
    """Each stage starts from the file the previous stage writes, and `make train-default` ships the last one."""
    cfgs = [load_config(ROOT / "configs" / f"{name}.yaml") for name in RECIPE]
    assert cfgs[0].model.init_from is None
    assert cfgs[1].model.init_from == f"{cfgs[0].run_dir}/model.safetensors"
    assert cfgs[2].model.init_from == f"{cfgs[1].run_dir}/model.safetensors"
    assert cfgs[2].model.branch_init == "runs/branch.safetensors"
    make = (ROOT / "Makefile").read_text()
    recipe = make[make.index("\ntrain-default:") : make.index("\n\n", make.index("\ntrain-default:"))]
    stop = re.search(r"configs/embedded_shapes\.yaml --stop-after (\d+)", recipe)
    assert stop, "the shape stage runs with --stop-after"
    assert cfgs[3].model.init_from == f"{cfgs[2].run_dir}/checkpoints/step_{int(stop.group(1)):07d}.pt"
    assert int(stop.group(1)) % cfgs[2].checkpoint_every == 0, "the stop step must have a checkpoint"
    assert "--out runs/branch.safetensors" in recipe
    assert f"ship_embedded.py {cfgs[3].run_dir}/model.safetensors" in recipe
    order = [recipe.index(f"configs/{name}.yaml") for name in RECIPE]
    assert order == sorted(order)


def test_the_synthcontext_recipe_chains_stage_to_stage():
    """projects/synthcontext: the old embedded model's four stages start where the last ended, run in order."""
    project = ROOT / "projects/synthcontext"
    script = (project / "scripts/train_embedded.sh").read_text()
    names = ["embedded", "embedded_continue", "embedded_shapes", "embedded_mix"]
    s1, s2, s3, s4 = (load_config(project / "configs/recipe" / f"{name}.yaml") for name in names)
    assert s1.model.init_from is None and s1.threads == 2
    assert s2.model.init_from == f"{s1.run_dir}/model.safetensors" and s2.steps == 2500
    assert s3.model.init_from == f"{s2.run_dir}/model.safetensors"
    assert s3.model.branch_init == "runs/branch.safetensors" and "--out runs/branch.safetensors" in script
    stop = int(re.search(r"embedded_shapes\.yaml --stop-after (\d+)", script).group(1))
    assert stop % s3.checkpoint_every == 0
    assert s4.model.init_from == f"{s3.run_dir}/checkpoints/step_{stop:07d}.pt"
    order = [script.index(f"$C/{name}.yaml") for name in names]
    assert order == sorted(order) and "C=projects/synthcontext/configs/recipe" in script
