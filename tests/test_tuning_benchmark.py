"""The statistics of benchmarks/tuning_synth.py: accumulated mIoU and the paired bootstrap of a gap."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("tuning_synth")


def test_miou_accumulates_over_images_then_averages(bench):
    # Two categories; category a has two seeds, b too. IoU is summed over images before the ratio.
    counts = {
        "a": np.array([[[1, 2], [3, 6]], [[0, 4], [4, 4]]]),  # seed 0: 4/8; seed 1: 4/8
        "b": np.array([[[2, 2], [0, 2]], [[1, 4], [0, 0]]]),  # seed 0: 2/4; seed 1: 1/4
    }
    best, mean = bench.miou(counts)
    assert mean == pytest.approx((50 + 50 + 50 + 25) / 4)
    assert best == pytest.approx(50.0)  # seed 0: (50 + 50) / 2; seed 1: (50 + 25) / 2
    assert bench.miou(counts, [np.array([1]), np.array([0])])[1] == pytest.approx((50 + 100 + 100 + 25) / 4)


def test_bootstrap_gap_is_paired(bench):
    rng = np.random.default_rng(0)
    rows = {}
    for c in ("x", "y"):
        union = rng.integers(50, 100, (1, 40))
        worse = rng.integers(0, 30, (1, 40))
        rows[c] = {
            "base-images": np.stack([worse, union], -1).tolist(),
            "better-images": np.stack([worse + 5, union], -1).tolist(),  # more overlap on every image
        }
    same = bench.bootstrap_gaps(rows, "base", "base", n=200)
    assert same["mean"] == [0.0, 0.0] and same["best_seed"] == [0.0, 0.0]
    lo, hi = bench.bootstrap_gaps(rows, "better", "base", n=200)["mean"]
    true = (
        bench.miou({c: np.asarray(r["better-images"]) for c, r in rows.items()})[1]
        - bench.miou({c: np.asarray(r["base-images"]) for c, r in rows.items()})[1]
    )
    assert 0 < lo <= true <= hi


def test_a_tiny_run_writes_json_and_its_table(bench, tmp_path):
    out = tmp_path / "t.json"
    args = "--image-size 64 --threads 1 --train 8 --test 4 --steps 2 --seeds 1000 --shots 1 --tune-prompts 1"
    import json

    import torch

    threads = torch.get_num_threads()
    try:
        assert bench.main([*args.split(), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the script sets the process's thread count

    table = json.loads(out.read_text())["table"]
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# In-context tuning") and args in md
    for m in ("1-shot", "tuned"):
        assert f"| {m} | {table[m]['mIoU_best_seed']:.1f} | {table[m]['mIoU_mean']:.1f} |" in md
