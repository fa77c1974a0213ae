"""The CUDA path, where a GPU is present (skipped elsewhere): `make test-cuda`, or `scripts/gpu_stage.sh` on a
machine lent for a training stage.

The model against transformers' SegGPT on the GPU in fp32, half precision against fp32, the embedded model's
predictor on the GPU against the CPU, and training steps on the GPU in bf16 that stop and resume exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_model import _inputs, _ours, _vit_large_pair

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
ASSETS = Path(__file__).resolve().parents[1] / "src" / "seggpt" / "assets" / "demo"


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 means fp32: no TF32 in matrix products or convolutions (cuDNN allows it by default)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_vit_large_on_cuda_equals_transformers():
    ours, hf = _vit_large_pair()
    inputs = _inputs(ours.config, b=2)
    ours, hf = ours.cuda(), hf.cuda()
    query, prompt, mask = (t.cuda() for t in inputs)
    with torch.no_grad():
        ref = hf(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask, embedding_type="semantic")
        out = _ours(ours, query, prompt, mask, 0)
        on_cpu = _ours(ours.cpu(), *inputs, 0)
    torch.testing.assert_close(out, ref.pred_masks, atol=2e-4, rtol=0)
    torch.testing.assert_close(out.cpu(), on_cpu, atol=2e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_vit_large_on_cuda_close_to_fp32(dtype):
    from seggpt.checkpoint import to_precision

    ours, _ = _vit_large_pair()
    query, prompt, mask = (t.cuda() for t in _inputs(ours.config, b=2))
    with torch.no_grad():
        ref = _ours(ours.cuda(), query, prompt, mask, 0)
        half = to_precision(ours, "cuda", "bf16" if dtype == torch.bfloat16 else "fp16")
        out = _ours(half, query.to(dtype), prompt.to(dtype), mask.to(dtype), 0)
    assert out.dtype == dtype and torch.isfinite(out).all()
    err = (out.float() - ref).abs().mean() / ref.abs().mean()
    assert err < (0.02 if dtype == torch.bfloat16 else 0.005), f"mean relative error {err:.4f}"


def _demo(name: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(ASSETS / f"{name}.png").convert("RGB"))
    return image, (np.asarray(Image.open(ASSETS / f"{name}_mask.png")) > 0).astype(np.uint8)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_embedded_predictor_on_cuda_labels_as_on_cpu(dtype):
    from seggpt import SegGPTPredictor

    pairs = [(_demo(f"photo_{n}_example1"), _demo(f"photo_{n}_target1")[0]) for n in ("chelsea", "coffee")]
    agree = []
    for (example, mask), target in pairs:
        answers = []
        for device, dt in (("cpu", "fp32"), ("cuda", dtype)):
            predictor = SegGPTPredictor(device=device, dtype=dt)
            predictor.set_prompts([example], [mask])
            answers.append(np.asarray(predictor.predict(target).labels))
        agree.append((answers[0] == answers[1]).mean())
    assert min(agree) >= (0.995 if dtype == "fp32" else 0.97), agree


def test_train_steps_on_cuda_in_bf16_resume_exactly(tmp_path):
    from seggpt.train import load_config, train
    from test_train import tiny_overrides

    over = {"device": "cuda", "precision": "bf16", "steps": 6}
    ref = train(load_config(None, tiny_overrides(tmp_path / "ref", **over)))
    assert math.isfinite(ref.last_loss)
    assert next(ref.model.parameters()).device.type == "cuda"
    cfg = load_config(None, tiny_overrides(tmp_path / "cut", **over))
    assert train(cfg, stop_after=3).step == 3
    done = train(cfg)
    assert done.step == 6
    for (k, v), w in zip(ref.model.state_dict().items(), done.model.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, atol=1e-5, rtol=0, msg=k)
