"""Pack the training parts of the real data sets into one small folder, for a machine that cannot see ../shared.

    python scripts/pack_training_data.py [--data ../shared/data] [--out data/train-pack] [--quality 80]

A GPU machine lent for a training stage gets a copy of the working tree and nothing beside it, so the stage's
data has to travel inside it (`data/` is ignored by git, and a carried folder may be tens of megabytes, not the
hundred that the four sets take). Only what the embedded model's recipe trains on is packed, in the sets' own
layouts, so a config reads the pack by swapping its data root (`configs/experiments/embedded_gpu_256.yaml`):

- Kvasir-SEG: the images of `configs/splits/kvasir_train.txt` and their masks;
- CamVid: `train/` and `trainannot/` (val is never packed);
- COCO128-seg: the images of `configs/splits/coco128_train.txt` and their polygon files, as they are;
- DAVIS-2016: the sequences of `configs/splits/davis2016_train.txt`.

Every reader shrinks what it reads to a short side of 320 pixels (`seggpt.data.readers.photos.shrink`, bicubic
images, nearest labels) before anything else, so the pack stores them that way: images as JPEG at ``--quality``,
labels as grey PNG of the same ids (quality 80: 40.5 MiB; 90 makes 57.5, too much beside the
working tree for a 64 MiB transfer). The validation parts stay out by construction; the script says what it wrote
and how large it is, and refuses an ``--out`` that is not empty unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from seggpt.data.readers.base import files_with, read_index_png, read_list
from seggpt.data.readers.photos import IMAGE_SUFFIXES, keep_only, shrink

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "configs" / "splits"
SHORT_SIDE = 320  # the readers' max_side


def _pack(image_path: Path, label_path: Path | None, image_out: Path, label_out: Path | None, quality: int) -> None:
    """One image (and its label image) shrunk as the readers shrink them, written in the pack."""
    image = np.asarray(Image.open(image_path).convert("RGB"))
    if label_path is None:  # polygons in normalised coordinates: the image alone changes size
        h, w = image.shape[:2]
        image, _ = shrink(image, np.zeros((h, w), np.int32), SHORT_SIDE)
    else:
        labels = read_index_png(label_path)
        image, labels = shrink(image, labels, SHORT_SIDE)
        if labels.min() < 0 or labels.max() > 255:
            raise ValueError(f"{label_path}: label ids outside 0..255")
        label_out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels.astype(np.uint8), mode="L").save(label_out)
    image_out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_out, quality=quality)


Job = tuple[Path, Path | None, Path, Path | None]


def jobs(data: Path, out: Path, splits: Path = SPLITS) -> tuple[list[Job], list[tuple[Path, Path]]]:
    """What the recipe trains on: (image, label or None, image in the pack, label in the pack or None) to shrink,
    and (file, copy in the pack) to copy as they are (COCO128's polygons)."""
    work, copies = [], []
    kv = data / "kvasir-seg"
    for img in keep_only(files_with(kv / "images", IMAGE_SUFFIXES), splits / "kvasir_train.txt", "images"):
        work.append((img, kv / "masks" / f"{img.stem}.png", out / "kvasir-seg/images" / f"{img.stem}.jpg",
                     out / "kvasir-seg/masks" / f"{img.stem}.png"))  # fmt: skip
    cv = data / "camvid"
    for img in files_with(cv / "train", IMAGE_SUFFIXES):
        work.append((img, cv / "trainannot" / f"{img.stem}.png", out / "camvid/train" / f"{img.stem}.jpg",
                     out / "camvid/trainannot" / f"{img.stem}.png"))  # fmt: skip
    co = data / "coco128-seg"
    for img in keep_only(files_with(co / "images/train2017", IMAGE_SUFFIXES), splits / "coco128_train.txt", "images"):
        work.append((img, None, out / "coco128-seg/images/train2017" / f"{img.stem}.jpg", None))
        polygons = co / "labels/train2017" / f"{img.stem}.txt"
        if polygons.is_file():
            copies.append((polygons, out / "coco128-seg/labels/train2017" / polygons.name))
    dv = data / "davis2016"
    for seq in read_list(splits / "davis2016_train.txt"):
        for img in sorted((dv / "JPEGImages/480p" / seq).glob("*.jpg")):
            work.append((img, dv / "Annotations/480p" / seq / f"{img.stem}.png",
                         out / "davis2016/JPEGImages/480p" / seq / img.name,
                         out / "davis2016/Annotations/480p" / seq / f"{img.stem}.png"))  # fmt: skip
    return work, copies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the sets as in ../shared/data")
    ap.add_argument("--out", default=str(ROOT / "data" / "train-pack"))
    ap.add_argument("--quality", type=int, default=80, help="JPEG quality of the packed images (default 80)")
    ap.add_argument("--splits", default=str(SPLITS), help="the split files (default configs/splits)")
    ap.add_argument("--overwrite", action="store_true", help="replace a pack already at --out")
    args = ap.parse_args(argv)
    data, out, splits = Path(args.data), Path(args.out), Path(args.splits)
    if not data.is_dir():
        print(f"error: no data folder {data}; pass --data where kvasir-seg/, camvid/, ... are", file=sys.stderr)
        return 2
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"error: {out} is not empty; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        work, copies = jobs(data, out, splits)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    from tqdm.auto import tqdm

    for image, label, image_out, label_out in tqdm(work, desc="packing", unit="image", disable=None):
        _pack(image, label, tmp / image_out.relative_to(out), label_out and tmp / label_out.relative_to(out),
              args.quality)  # fmt: skip
    for src, dst in copies:
        (tmp / dst.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp / dst.relative_to(out))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {len(work)} images, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
