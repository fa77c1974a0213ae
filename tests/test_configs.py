"""The shipped training configs load, build their data, and chain into the embedded model's recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from seggpt.train import load_config
from seggpt.train.trainer import build_sources

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
RECIPE = ["embedded", "embedded_continue", "embedded_shapes", "embedded_mix"]


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
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


def test_the_two_hour_recipe_script_chains_stage_to_stage():
    """docs/results/embedded_2h/train.sh: every override is a known key; each stage starts where the last ended."""
    script = (ROOT / "docs/results/embedded_2h/train.sh").read_text()
    run_root = re.search(r"^R=(\S+)$", script, re.M).group(1)
    stages = []
    for m in re.finditer(r"^\$S train (configs/\S+\.yaml)((?: \S+=\S+)*)((?: --\S+(?: \d+)?)*)$", script, re.M):
        overrides = [o.replace("$R", run_root) for o in m.group(2).split()]
        stages.append((load_config(ROOT / m.group(1), overrides), m.group(3)))
    assert [s[0].run_dir for s in stages] == [f"{run_root}/stage{i}" for i in (1, 2, 3, 4)]
    (s1, _), (s2, _), (s3, flags3), (s4, _) = stages
    assert s1.model.init_from is None and s1.threads == 2
    assert s2.model.init_from == f"{s1.run_dir}/model.safetensors" and s2.steps == 2500
    assert s3.model.init_from == f"{s2.run_dir}/model.safetensors"
    assert s3.model.branch_init == "runs/branch.safetensors" and "--out runs/branch.safetensors" in script
    stop = int(re.search(r"--stop-after (\d+)", flags3).group(1))
    assert stop % s3.checkpoint_every == 0
    assert s4.model.init_from == f"{s3.run_dir}/checkpoints/step_{stop:07d}.pt"
