"""The training configs (shipped and the SynthContext project's) load, build their data, and chain into a recipe."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from seggpt.train import load_config
from seggpt.train.trainer import build_sources, checkpoint_name

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(ROOT / "configs").rglob("*.yaml"), *(ROOT / "projects").rglob("configs/**/*.yaml")])


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.steps > 0 and cfg.batch_size > 0
    if all(s["type"] in ("synth", "real_pairs") for s in cfg.data.sources):  # the rest need datasets on disk
        sources, weights = build_sources(cfg)
        assert len(sources) == len(weights) == len(cfg.data.sources)


def test_the_embedded_recipe_trains_on_training_parts_only_and_ships_its_run():
    """configs/embedded.yaml starts from ImageNet features, each later stage from the stage before; none reads a
    validation part, the encoder is unfrozen from the top down (stride 16 in stage 3, stride 8 in stage 4; the
    stride-4 features stay ImageNet's), stage 5 adds the correspondence prior and stages 6 and 7 keep it, and
    `make train-default` runs the stages in order and ships the mean of stage 6 and stage 7's averaged checkpoints."""
    names = ["embedded", *(f"embedded_stage{i}" for i in range(2, 8))]
    stages = [load_config(ROOT / "configs" / f"{name}.yaml") for name in names]
    stage1 = stages[0]
    assert stage1.model.preset == "lite_small" and stage1.model.init_from is None
    assert stage1.model.image_encoder_weights == "imagenet"
    for before, cfg in itertools.pairwise(stages):
        assert cfg.model.init_from == f"{before.run_dir}/model.safetensors" and cfg.run_dir != before.run_dir
    assert stages[0].model.freeze == stages[1].model.freeze == ["image_encoder."]
    stem = ["image_encoder._conv_stem.", "image_encoder._bn0."]
    assert stages[2].model.freeze == stem + [f"image_encoder._blocks.{i}." for i in range(5)]
    for cfg in stages[3:]:
        assert cfg.model.freeze == stem + [f"image_encoder._blocks.{i}." for i in range(3)]
    assert stages[4].model.overrides == stages[5].model.overrides == stages[6].model.overrides == {"fine_prior": True}
    assert not stages[3].model.overrides
    for cfg in stages:
        for source in cfg.data.sources:
            assert "val" not in str(source.get("split_file", "")), source
            assert source.get("split", "train") in ("train", "train2017"), source
            if source["type"] in ("folder", "yolo", "davis_frames"):  # sets without an official split: a train list
                assert source["split_file"].startswith("configs/splits/")
                assert source["split_file"].endswith("_train.txt")
    make = (ROOT / "Makefile").read_text()
    recipe = make[make.index("\ntrain-default:") : make.index("\n\n", make.index("\ntrain-default:"))]
    where = [recipe.index(f"seggpt train configs/{name}.yaml") for name in names]
    assert where == sorted(where)
    last, before = stages[-1], stages[-2]
    foreach = re.search(r"\$\(foreach s,([\d ]+),(\S+)\)", recipe)
    steps, path = foreach.group(1).split(), foreach.group(2)
    assert [path.replace("$(s)", s) for s in steps] == [
        f"{last.run_dir}/checkpoints/{checkpoint_name(int(s))}" for s in steps
    ]
    assert [int(s) for s in steps] == list(range(300, last.steps + 1, last.checkpoint_every))
    assert len(steps) <= last.keep_checkpoints  # all of them are still there when the run ends
    assert f"average_weights.py {last.run_dir}/average.safetensors" in recipe
    mean = f"average_weights.py {last.run_dir}/shipped.safetensors --overwrite \\\n\t\t"
    assert mean + f"{before.run_dir}/model.safetensors {last.run_dir}/average.safetensors" in recipe
    assert f"ship_embedded.py {last.run_dir}/shipped.safetensors" in recipe


@pytest.mark.parametrize("name", ["kvasir", "coco128", "davis2016"])
def test_split_files_are_disjoint_and_cover_the_set(name):
    train = (ROOT / "configs/splits" / f"{name}_train.txt").read_text().split()
    val = (ROOT / "configs/splits" / f"{name}_val.txt").read_text().split()
    assert train and val and not set(train) & set(val)
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    data = ROOT.parent / "shared" / "data"
    folders = {
        "kvasir": "kvasir-seg/images",
        "coco128": "coco128-seg/images/train2017",
        "davis2016": "davis2016/JPEGImages/480p",
    }
    folder = data / folders[name]
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here")
    assert {p.stem if p.is_file() else p.name for p in folder.iterdir()} == set(train) | set(val)


def test_dev_lists_are_training_images():
    """The lists candidates are chosen on (make dev-results) hold training images only, never validation ones."""
    kvasir = (ROOT / "configs/splits/kvasir_dev.txt").read_text().split()
    assert len(kvasir) == len(set(kvasir)) == 100
    assert set(kvasir) <= set((ROOT / "configs/splits/kvasir_train.txt").read_text().split())
    camvid = (ROOT / "configs/splits/camvid_dev.txt").read_text().split()
    folder = ROOT.parent / "shared" / "data" / "camvid" / "train"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here")
    assert set(camvid) <= {p.stem for p in folder.iterdir()}


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
