"""Can a small network learn to name an object's shape at the embedded model's scale?

    python projects/synthcontext/scripts/shape_learnability.py vit|cnn [--seconds 480] [--threads 1]

Single SynthContext objects (one of the 20 training shapes, any texture, colour, size and pose, on a random
background), rendered at 128 and resized to 64 px as the embedded model sees them; 24 000 for training, 2 000 new
ones for the test. Two classifiers get the same time on one thread, AdamW at lr 5e-4, batches of 64, bf16:

- ``vit``: the embedded model's token grid and width (8-pixel patches, width 192, 6 pre-norm blocks, mean pool);
- ``cnn``: four stages of two 3x3 convs (32 to 192 channels), max-pooled, then a global mean.

Prints the test accuracy every minute (chance: 5%). This is why the embedded model got a conv branch
(``SegGPTConfig.branch_channels``; docs/embedded-model-history.md).
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool

import numpy as np
import torch
from PIL import Image
from torch import nn

SIZE = 64


def render(index: int) -> tuple[np.ndarray, int]:
    from seggpt.data import synth

    rng = np.random.default_rng([4242, index])
    train = synth.vocabulary("train")
    vocab = synth.Vocabulary(train.shapes, train.textures, train.colours, train.category_values, 0.0)
    label = index % len(synth.TRAIN_SHAPES)
    obj = synth.random_object(rng, (128, 128), vocab, fixed={"shape": synth.TRAIN_SHAPES[label]})
    obj = synth._place(rng, obj, [], (128, 128))
    scene = synth.Scene(synth.random_background(rng, (128, 128), vocab), (obj,), synth._noise_level(rng))
    image, _ = synth.render(scene, rng)
    return np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR)), label


def dataset(n: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    with Pool(2) as pool:
        items = pool.map(render, range(offset, offset + n), chunksize=256)
    x = torch.tensor(np.stack([a for a, _ in items])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.tensor([b for _, b in items])


class ViT(nn.Module):
    def __init__(self, patch: int = 8, width: int = 192, depth: int = 6, classes: int = 20) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (SIZE // patch) ** 2, width) * 0.02)
        heads = width // 64
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, "gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.blocks(tokens).mean(1))


def cnn(classes: int = 20) -> nn.Module:
    def stage(a: int, b: int) -> list[nn.Module]:
        conv = [nn.Conv2d(a, b, 3, 1, 1), nn.BatchNorm2d(b), nn.ReLU(), nn.Conv2d(b, b, 3, 1, 1), nn.BatchNorm2d(b)]
        return [*conv, nn.ReLU(), nn.MaxPool2d(2)]

    chans = (3, 32, 64, 128, 192)
    layers = [m for a, b in zip(chans[:-1], chans[1:], strict=True) for m in stage(a, b)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(192, classes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["vit", "cnn"])
    ap.add_argument("--seconds", type=float, default=480)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    x_train, y_train = dataset(24000, 0)
    x_test, y_test = dataset(2000, 10**6)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ViT() if args.model == "vit" else cnn()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)

    def accuracy() -> float:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        model.train()
        return acc

    start, step, report = time.time(), 0, 60.0
    while time.time() - start < args.seconds:
        i = torch.randint(0, len(x_train), (64,))
        with torch.autocast("cpu", torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x_train[i]), y_train[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if time.time() - start > report:
            elapsed = time.time() - start
            print(f"{args.model} {elapsed:4.0f} s  step {step:5d}  test accuracy {accuracy():.1%}", flush=True)
            report += 60
    print(f"{args.model}: {step} steps x 64, test accuracy {accuracy():.1%} (chance 5%)")


if __name__ == "__main__":
    main()
