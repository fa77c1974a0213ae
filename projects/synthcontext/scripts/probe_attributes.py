"""Do the model's features know an object's shape, texture and colour? A linear probe on frozen tokens.

    python projects/synthcontext/scripts/probe_attributes.py [--weights CKPT] [--objects 3000] [--threads 2]
        [--held-out]

Draws SynthContext scenes with one object each (training vocabulary: every attribute independent, random pose
and size, varied backgrounds), runs the frozen model with the scene as both example and query, averages the
decoder's input features (the concatenated encoder taps) over the query tokens the object covers, and fits one
linear classifier per attribute on 75% of the objects. Prints the test accuracy beside chance. A model that
matches a category in context must tell its values apart; a probe that cannot says the features do not carry
the attribute at all.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from seggpt.checkpoint import load_model
from seggpt.data import synth
from seggpt.transforms import normalize


def draw_objects(
    n: int, size: int, seed: int, held_out: bool = False
) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]]]:
    """n one-object scenes: images (n, size, size, 3) uint8, masks (n, size, size) bool, attribute values.

    Shapes and textures are the training ones, or with ``held_out`` the held-out ones (never seen in training).
    """
    rng = np.random.default_rng(seed)
    vocab = synth.vocabulary("train")
    shapes = synth.HELD_OUT_SHAPES if held_out else synth.TRAIN_SHAPES  # named only: random ones are one-offs
    textures = synth.HELD_OUT_TEXTURES if held_out else synth.TRAIN_TEXTURES
    images, masks, attrs = [], [], {a: [] for a in synth.ATTRIBUTES}
    while len(images) < n:
        fixed = {"shape": shapes[int(rng.integers(len(shapes)))], "texture": textures[int(rng.integers(len(textures)))]}
        obj = synth.random_object(rng, (size, size), vocab, fixed=fixed, radius_range=(0.12, 0.3))
        scene = synth.Scene(synth.random_background(rng, (size, size), vocab), (obj,), 0.0)
        image, labels = synth.render(scene)
        if (labels > 0).sum() < size * size // 100:
            continue
        images.append(image)
        masks.append(labels > 0)
        for a in synth.ATTRIBUTES:
            attrs[a].append(obj.attribute(a))
    return np.stack(images), np.stack(masks), attrs


@torch.no_grad()
def object_features(model, images: np.ndarray, masks: np.ndarray, batch: int = 32, raw: bool = False) -> torch.Tensor:
    """(n, C * taps): the decoder-input features averaged over the query tokens each object covers most of
    (``raw``: the pixels of those patches instead, what a linear map of the input alone can use)."""
    h, w = model.config.image_size
    p = model.config.patch_size
    feats = []
    for i in range(0, len(images), batch):
        img = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float()
        img = F.interpolate(img, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        m = torch.from_numpy(masks[i : i + batch]).float()[:, None]
        m = F.interpolate(m, size=(h, w), mode="area")
        x = normalize(img)
        if raw:  # the patch embedding's input: each query patch's pixels, flattened
            q = F.unfold(x, p, stride=p).transpose(1, 2).reshape(len(x), h // p, w // p, -1)
        else:
            painted = normalize((m > 0.5).float().expand(-1, 3, -1, -1) * 255)
            canvas_img = torch.cat([x, x], dim=2)
            canvas_msk = torch.cat([painted, painted], dim=2)
            bmp = model.query_mask().expand(len(x), -1)
            q = torch.cat(model.encode(canvas_img, canvas_msk, bmp, torch.zeros(len(x))), dim=-1)  # B Hp Wp C
            q = q[:, q.shape[1] // 2 :]  # query half
        cover = F.avg_pool2d(m, p)[:, 0]  # B hp wp: share of each token's patch the object covers
        weight = cover * (cover >= 0.5 * cover.amax(dim=(1, 2), keepdim=True))
        feats.append((q * weight[..., None]).sum((1, 2)) / weight.sum((1, 2))[:, None])
    return torch.cat(feats)


def probe(train_x, train_y, test_x, test_y, classes: int, steps: int = 500) -> float:
    """Test accuracy of a multinomial logistic regression (standardised inputs, light L2), full-batch Adam."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    lin = torch.nn.Linear(a.shape[1], classes)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin(a), train_y).backward()
        opt.step()
    with torch.no_grad():
        return float((lin(b).argmax(1) == test_y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="checkpoint (default: the embedded model)")
    ap.add_argument("--image-size", type=int, default=None, help="run the model at this side (default: its own)")
    ap.add_argument("--objects", type=int, default=3000)
    ap.add_argument("--size", type=int, default=128, help="scene side before resizing to the model (as the benchmark)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--held-out", action="store_true", help="held-out shapes and textures (never trained on)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_model(args.weights, device="cpu", image_size=args.image_size)  # object_features works on the CPU
    images, masks, attrs = draw_objects(args.objects, args.size, args.seed, args.held_out)
    x = object_features(model, images, masks)
    pixels = object_features(model, images, masks, raw=True)
    cut = int(0.75 * len(x))
    which = "held-out" if args.held_out else "training"
    print(f"linear probe on {cut} objects, tested on {len(x) - cut} ({which} shapes and textures, "
          f"model input {model.config.image_size})")  # fmt: skip
    print("| attribute | values | model features | the patches' pixels | chance |\n|---|---:|---:|---:|---:|")
    for a in synth.ATTRIBUTES:
        names = sorted(set(attrs[a]))
        y = torch.tensor([names.index(v) for v in attrs[a]])
        acc = probe(x[:cut], y[:cut], x[cut:], y[cut:], len(names))
        raw = probe(pixels[:cut], y[:cut], pixels[cut:], y[cut:], len(names))
        chance = float(np.bincount(y[cut:].numpy()).max() / (len(y) - cut))
        print(f"| {a} | {len(names)} | {100 * acc:.1f}% | {100 * raw:.1f}% | {100 * chance:.1f}% |")


if __name__ == "__main__":
    main()
