"""Render the demo's bundled inputs into ``src/seggpt/assets/demo/`` (run once; the small PNGs are committed).

    python scripts/make_demo_assets.py [--out DIR] [--overwrite]
    python scripts/make_demo_assets.py --sheet docs/synthcontext.png     # docs/synthcontext.md's picture

Every task is a set of example images with masks and target images with their true masks, listed in
``manifest.json``:

    {"version": 1, "tasks": [{"name": ..., "title": ..., "task": "semantic" | "instance",
                              "examples": [{"image": "x.png", "mask": "x_mask.png"}, ...],
                              "targets":  [{"image": "y.png", "mask": "y_mask.png"}, ...]}]}

Masks are indexed PNGs (label 0 = background, 1..n = classes or instances, the palette shows them);
``seggpt.io.read_mask`` reads them as label maps. Target masks are the truth, for scoring the demo's answers.

Synthetic tasks come from SynthContext, including a *held-out* shape (hearts are never shown in training);
the real tasks are views of two photographs bundled with scikit-image that training never uses
(``seggpt.data.real_pairs.HELD_OUT_PHOTOS``), with regions from the unsupervised segmentation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from seggpt.coloring import build_palette, paint, paint_with, random_palette
from seggpt.data import synth
from seggpt.data.augment import AugmentConfig, random_view
from seggpt.data.real_pairs import HELD_OUT_PHOTOS, RealPhotoPairs, segmented_photo
from seggpt.io import atomic_write, save_label_png

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "seggpt" / "assets" / "demo"
SIZE = (128, 128)
PHOTO_SIZE = (112, 168)  # (h, w): the photos' 2:3 aspect, small enough to ship

# Regions of the held-out photos in the fine (scale 150) segmentation, each label picked by points inside it
# (x, y at the 320-pixel working size): the coffee, the cup's inside wall and the saucer (two pieces); the cat's
# left eye, right eye and nose.
PHOTO_REGIONS: dict[str, list[list[tuple[int, int]]]] = {
    "coffee": [[(150, 75)], [(150, 20)], [(60, 150), (200, 190)]],
    "chelsea": [[(120, 85)], [(225, 95)], [(185, 170)]],
}


def _save_image(image: np.ndarray, path: Path, overwrite: bool) -> None:
    img = Image.fromarray(np.ascontiguousarray(image))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", optimize=True), overwrite)


def _scene_image(
    rng: np.random.Generator, attribute: str, values: list[str], split: str, min_each: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """A clean (noise-free, so the PNG stays small) scene with every category value visible."""
    vocab = synth.vocabulary(split)
    for _ in range(50):
        scene, classes = synth.category_scene(
            rng, SIZE, vocab, attribute, values, num_positive=(min_each, 2), num_distractors=(2, 4)
        )
        scene = synth.Scene(scene.background, scene.objects, 0.0)
        image, inst = synth.render(scene)
        labels = synth.class_map(inst, classes)
        # A demo should be readable: every category visible, and standing out from the background.
        contrast = np.abs(image.astype(float) - scene.background)[labels > 0].sum(-1)
        if (contrast > 90).mean() > 0.9 and all((labels == j + 1).sum() >= 60 for j in range(len(values))):
            return image, labels
    raise RuntimeError("could not draw a scene showing every category; try another seed")


def synthetic_tasks(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    tasks = []
    heart = [_scene_image(rng, "shape", ["heart"], "eval") for _ in range(4)]
    tasks.append(
        {
            "name": "synth_hearts",
            "title": "SynthContext, a shape the model never saw in training: every heart, whatever its colour",
            "task": "semantic",
            "items": {"examples": heart[:2], "targets": heart[2:]},
        }
    )
    stripes = [_scene_image(rng, "texture", ["stripes"], "train") for _ in range(3)]
    tasks.append(
        {
            "name": "synth_stripes",
            "title": "SynthContext texture category: everything striped, whatever its shape",
            "task": "semantic",
            "items": {"examples": stripes[:2], "targets": stripes[2:]},
        }
    )
    two = [_scene_image(rng, "shape", ["star5", "circle"], "train") for _ in range(2)]
    tasks.append(
        {
            "name": "synth_two_classes",
            "title": "SynthContext, two classes at once: stars (label 1) and circles (label 2)",
            "task": "semantic",
            "items": {"examples": two[:1], "targets": two[1:]},
        }
    )
    pair = synth.sample_instance(rng, SIZE, num_objects=(4, 5))
    tasks.append(
        {
            "name": "synth_instances",
            "title": "SynthContext instances: the same objects in a moved, cropped, recoloured view",
            "task": "instance",
            "items": {
                "examples": [(pair.example_image, pair.example_labels)],
                "targets": [(pair.query_image, pair.query_labels)],
            },
        }
    )
    return tasks


def photo_tasks(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    augment = AugmentConfig(scale=(0.55, 0.9), ratio=(1.4, 1.6), brightness=0.2, contrast=0.2, saturation=0.2)
    tasks = []
    for name in HELD_OUT_PHOTOS:
        photo = segmented_photo(name)
        regions = photo.regions[0]
        labels = np.zeros(regions.shape, np.int32)
        for k, points in enumerate(PHOTO_REGIONS[name], start=1):
            for x, y in points:
                labels[regions == regions[y, x]] = k
        # The example is the whole photo; the target a different crop, flipped, colour-jittered.
        ex_img, ex_lab = random_view(
            photo.image, labels, PHOTO_SIZE, rng, AugmentConfig(scale=(1, 1), ratio=(1.5, 1.5), hflip=0, jitter_prob=0)
        )
        tg_img, tg_lab = random_view(photo.image, labels, PHOTO_SIZE, rng, augment)
        tasks.append(
            {
                "name": f"photo_{name}",
                "title": f"A photograph never used in training ({name}, scikit-image): follow the marked regions",
                "task": "instance",
                "items": {"examples": [(ex_img, ex_lab)], "targets": [(tg_img, tg_lab)]},
            }
        )
    return tasks


def write(out: Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Render every task into ``out`` and write ``out/manifest.json``; returns the manifest path."""
    manifest = {"version": 1, "seed": seed, "tasks": []}
    for task in synthetic_tasks(seed) + photo_tasks(seed + 1):
        entry = {k: task[k] for k in ("name", "title", "task")}
        top = max(int(lab.max()) for group in task["items"].values() for _, lab in group)
        palette = build_palette(max(top, 1))
        for group, items in task["items"].items():
            entry[group] = []
            for i, (image, labels) in enumerate(items, start=1):
                stem = f"{task['name']}_{group[:-1]}{i}"
                _save_image(image, out / f"{stem}.png", overwrite)
                save_label_png(labels, out / f"{stem}_mask.png", palette, overwrite)
                entry[group].append({"image": f"{stem}.png", "mask": f"{stem}_mask.png"})
        manifest["tasks"].append(entry)
    text = json.dumps(manifest, indent=2) + "\n"
    return atomic_write(out / "manifest.json", lambda tmp: Path(tmp).write_text(text), overwrite)


def _paint(label_maps: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Paint label maps that share ids with one mapping: binary masks white (as at inference), several ids in
    random colours (as in training)."""
    ids = sorted(set().union(*(np.unique(m).tolist() for m in label_maps)) - {0})
    if ids == [1]:
        return [paint(m.astype(np.int64), build_palette(1)) for m in label_maps]
    mapping = dict(zip(ids, random_palette(len(ids), rng), strict=True))
    return [paint_with(m, mapping) for m in label_maps]


def _with_masks(images: list[np.ndarray], label_maps: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    return [t for pair in zip(images, _paint(label_maps, rng), strict=True) for t in pair]


def contact_sheet(seed: int = 0, tile: int = 112) -> Image.Image:
    """A picture of SynthContext: few-shot episodes of each category kind, a three-class pair, an instance
    pair, a video, held-out episodes and real-photo pairs; every image is followed by its mask."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(seed + 1)
    size = (128, 128)

    def episode(attribute: str, value: str, split: str, shots: int) -> list[np.ndarray]:
        ep = synth.sample_semantic(rng, size, shots, split=split, attribute=attribute, value=value)
        return _with_masks([*ep.images, ep.query_image], [*ep.masks, ep.query_mask], colours)

    def pair(p) -> list[np.ndarray]:
        return _with_masks([p.example_image, p.query_image], [p.example_labels, p.query_labels], colours)

    rows = [
        ("semantic, category = shape star5: 3 examples, then the query", episode("shape", "star5", "train", 3)),
        ("semantic, category = texture stripes (any shape, any colour)", episode("texture", "stripes", "train", 3)),
        ("semantic, category = colour red (any shape, any texture)", episode("colour", "red", "train", 3)),
    ]
    mc = synth.sample_multiclass(rng, size, num_classes=3)
    rows.append(
        (
            f"three classes at once ({', '.join(mc.meta['values'])}) | instances: two views of one scene",
            pair(mc) + pair(synth.sample_instance(rng, size)),
        )
    )
    video = synth.sample_video(rng, size, num_frames=8, num_objects=3)
    frames = (0, 2, 4, 6)
    rows.append(
        (
            "video: objects move, turn, occlude, leave and come back (frames 0, 2, 4, 6)",
            _with_masks([video.frames[t] for t in frames], [video.labels[t] for t in frames], colours),
        )
    )
    rows.append(
        (
            "held out, evaluation only: shape heart | texture rings (one example, then the query)",
            episode("shape", "heart", "eval", 1) + episode("texture", "rings", "eval", 1),
        )
    )
    photos = RealPhotoPairs()
    rows.append(
        (
            "real photographs bundled with scikit-image: two views, unsupervised regions",
            pair(photos.sample_pair(rng, size)) + pair(photos.sample_pair(rng, size)),
        )
    )
    header = 16
    sheet = Image.new("RGB", (8 * tile, len(rows) * (tile + header)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (title, tiles) in enumerate(rows):
        y = r * (tile + header)
        draw.text((4, y + 2), title, fill=(0, 0, 0))
        for c, t in enumerate(tiles[:8]):
            img = Image.fromarray(np.ascontiguousarray(t)).resize((tile, tile), Image.BILINEAR)
            sheet.paste(img, (c * tile, y + header))
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the package's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--sheet", type=Path, help="write only a contact sheet of SynthContext episodes here")
    args = parser.parse_args(argv)
    if args.sheet:
        img = contact_sheet(args.seed).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        atomic_write(args.sheet, lambda tmp: img.save(tmp, format="PNG", optimize=True), args.overwrite)
        print(f"wrote {args.sheet} ({args.sheet.stat().st_size / 1024:.0f} KB)")
        return 0
    path = write(args.out, args.seed, args.overwrite)
    files = sorted(args.out.glob("*.png"))
    total = sum(f.stat().st_size for f in files) + path.stat().st_size
    print(f"wrote {len(files)} PNGs and {path} ({total / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
