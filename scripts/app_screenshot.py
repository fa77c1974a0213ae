"""Take the screenshot of `seggpt app` in docs/app.md (docs/app.png) in headless Chromium.

    python scripts/app_screenshot.py [docs/app.png] [--weights W] [--data ../shared/data]

Uses the embedded model when it exists (else --weights, else a random vit_small, which the page then shows as
"random weights" and whose answers are noise). One example with an uploaded mask, one with a mask painted by
mouse strokes, two targets: with --data, frames of DAVIS-2016's dog (a validation sequence: the model never
trained on it), read in place; without, SynthContext scenes.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seggpt.app import create_app  # noqa: E402
from seggpt.checkpoint import EMBEDDED_WEIGHTS, save_native  # noqa: E402
from seggpt.config import vit_small  # noqa: E402
from seggpt.data.readers.base import read_index_png  # noqa: E402
from seggpt.data.synth import sample_semantic  # noqa: E402
from seggpt.io import atomic_write, read_image  # noqa: E402
from seggpt.modeling import SegGPT  # noqa: E402
from test_app_browser import start_chromium, start_server, stop_server  # noqa: E402


def davis_frames(data: Path, sequence: str, frames: tuple[str, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """DAVIS-2016 frames of one sequence (RGB) and their object masks (bool), from ``data``/davis2016."""
    root = data / "davis2016"
    images = [read_image(root / "JPEGImages/480p" / sequence / f"{f}.jpg") for f in frames]
    return images, [read_index_png(root / "Annotations/480p" / sequence / f"{f}.png") > 0 for f in frames[:2]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="docs/app.png")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--data", default=None, help="../shared/data: real photographs (DAVIS-2016 dog) instead")
    args = ap.parse_args()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp(prefix="seggpt-shot-"))
    weights = args.weights or (EMBEDDED_WEIGHTS if EMBEDDED_WEIGHTS.exists() else None)
    if weights is None:
        print("no embedded model yet: a random vit_small (the masks shown are noise)")
        torch.manual_seed(0)
        weights = tmp / "random_vit_small.safetensors"
        try:
            cfg = vit_small()
        except ValueError:  # the preset's decoder taps start before its merge block in some versions
            cfg = vit_small(merge_index=1)
        save_native(SegGPT(cfg), weights)

    if args.data:
        images, masks = davis_frames(Path(args.data), "dog", ("00000", "00020", "00040", "00059"))
    else:
        ep = sample_semantic(np.random.default_rng(3), size=256, k_shots=2, split="eval", attribute="shape")
        queries = [sample_semantic(np.random.default_rng(s), 256, 1, "eval", "shape", ep.value) for s in (5, 6)]
        images, masks = [*ep.images, *(q.query_image for q in queries)], [m > 0 for m in ep.masks]
    paths = {}
    for name, arr in [
        ("example_1.png", images[0]),
        ("example_1_mask.png", masks[0].astype(np.uint8) * 255),
        ("example_2.png", images[1]),
        ("target_1.png", images[2]),
        ("target_2.png", images[3]),
    ]:
        paths[name] = tmp / name
        Image.fromarray(arr).save(paths[name])

    server, url = start_server(create_app(weights))
    driver = start_chromium(tmp / "profile", width=1280, height=1500)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "parameters" in d.find_element(By.ID, "model-info").text)
        for name in ("example_1.png", "example_2.png"):
            driver.find_element(By.ID, "example-input").send_keys(str(paths[name]))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".example canvas.paint")) == 2)
        driver.find_elements(By.CSS_SELECTOR, ".example input.mask-input")[0].send_keys(
            str(paths["example_1_mask.png"])
        )
        # paint the second example's object: strokes over its mask's bounding box
        canvas = driver.find_elements(By.CSS_SELECTOR, ".example canvas.paint")[1]
        ys, xs = np.nonzero(masks[1])
        scale = canvas.size["width"] / masks[1].shape[1]
        for y in range(int(ys.min()) + 4, int(ys.max()) - 2, 8):
            row = xs[ys == y]
            if len(row) < 2:
                continue
            x0, x1 = (int(row.min()) + 3) * scale, (int(row.max()) - 3) * scale
            w, h = canvas.size["width"], canvas.size["height"]
            ActionChains(driver).move_to_element_with_offset(
                canvas, x0 - w / 2, y * scale - h / 2
            ).click_and_hold().move_by_offset(max(1, x1 - x0), 0).release().perform()
        for name in ("target_1.png", "target_2.png"):
            driver.find_element(By.ID, "target-input").send_keys(str(paths[name]))
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result img.color")) == 2)
        wait.until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        # the whole page, not just the window: a screenshot beyond the viewport through the DevTools protocol
        width, height = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        time.sleep(0.3)
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
        )
        out = Path(args.out)
        png = base64.b64decode(shot["data"])
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(png), overwrite=True)
        print(f"wrote {out} ({Image.open(out).size[0]}x{Image.open(out).size[1]}) with weights {Path(weights).name}")
    finally:
        driver.quit()
        stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
