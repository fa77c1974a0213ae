"""The web app in a real browser: Debian's headless Chromium, driven by Selenium through Debian's ChromeDriver.

The app runs on a free localhost port with a tiny random model. The browser uploads an example, its mask (a file,
or painted with the mouse on the canvas) and a target, clicks Run, and the label map the page links to must equal
what the library's predictor returns for the same inputs. Install the browser with scripts/install_browser.sh.
"""

from __future__ import annotations

import io
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from seggpt.app import Limits, create_app, make_server  # noqa: E402
from seggpt.predictor import SegGPTPredictor  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Flags that work on a machine with no network and no display (the probe's set, plus a fixed window size).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1400",
]
WAIT = 30  # seconds for a page action; the tiny model answers in milliseconds

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "Chromium is not installed: run scripts/install_browser.sh (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


def start_chromium(user_data_dir: Path, width: int = 1280, height: int = 1400):
    """Headless Debian Chromium under Selenium, with a fresh profile; never downloads a driver."""
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--window-size={width},{height}")
    opts.add_argument(f"--user-data-dir={user_data_dir}")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def start_server(app):
    """Serve ``app`` on a free 127.0.0.1 port in a daemon thread -> (server, base url); stop it with stop_server."""
    server = make_server(app, "127.0.0.1", 0)
    server.serving = threading.Thread(target=server.serve_forever, daemon=True)
    server.serving.start()
    return server, f"http://127.0.0.1:{server.server_port}"


def stop_server(server) -> None:
    """Stop serving and wait until the server has closed. The serving thread holds the app and its model: left
    to drop them while the interpreter exits, it is stopped inside torch and the process aborts."""
    server.shutdown()
    server.serving.join(60)


def _fetch_png(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=WAIT) as r:
        return np.asarray(Image.open(io.BytesIO(r.read()))).astype(np.int64)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    labels = np.zeros((120, 160), np.uint8)
    labels[10:60, 10:80] = 1
    labels[60:110, 80:150] = 2
    out = {
        "example": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
        "mask": labels,
        "target": rng.integers(0, 256, (90, 130, 3), dtype=np.uint8),
    }
    paths = {}
    for name, arr in out.items():
        paths[name] = d / f"{name}.png"
        Image.fromarray(arr).save(paths[name])
    frames = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
    paths["video"] = d / "clip.gif"
    Image.fromarray(frames[0]).save(
        paths["video"], save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]], duration=100
    )
    first = np.zeros((60, 80), np.uint8)
    first[10:40, 10:50] = 1
    paths["first_mask"] = d / "first_mask.png"
    Image.fromarray(first).save(paths["first_mask"])
    paths["junk"] = d / "notes.txt"
    paths["junk"].write_text("this is not an image\n")
    return paths


@pytest.fixture(scope="module")
def base_url(weights):
    server, url = start_server(create_app(weights, limits=Limits(max_upload_mb=8)))
    yield url
    stop_server(server)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def direct(weights) -> SegGPTPredictor:
    return SegGPTPredictor(model=weights)


def _open(browser, base_url):
    browser.get(base_url + "/")
    WebDriverWait(browser, WAIT).until(ec.text_to_be_present_in_element((By.ID, "model-info"), "parameters"))


def _add_example(browser, image: Path) -> None:
    browser.find_element(By.ID, "example-input").send_keys(str(image))
    # the paint canvas appears once the browser has decoded the image
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".example canvas.paint"))


def _run_and_wait(browser):
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, WAIT).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, ".result a.dl-labels") or d.find_element(By.ID, "error").is_displayed()
        )
    )
    error = browser.find_element(By.ID, "error")
    assert not error.is_displayed(), f"the page shows an error: {error.text}"
    return browser.find_elements(By.CSS_SELECTOR, ".result")


def test_upload_example_mask_target_returns_the_library_mask(browser, base_url, files, direct):
    _open(browser, base_url)
    _add_example(browser, files["example"])
    browser.find_element(By.CSS_SELECTOR, ".example input.mask-input").send_keys(str(files["mask"]))
    browser.find_element(By.ID, "target-input").send_keys(str(files["target"]))
    browser.find_element(By.ID, "num-labels").send_keys("8")
    cards = _run_and_wait(browser)
    assert len(cards) == 1
    got = _fetch_png(cards[0].find_element(By.CSS_SELECTOR, "a.dl-labels").get_attribute("href"))

    direct.set_prompts([files["example"]], [files["mask"]], task="semantic", num_labels=8)
    expected = direct.predict(files["target"]).labels
    assert len(np.unique(expected)) >= 2, "the random model should give a varied answer, or equality says little"
    target_hw = np.asarray(Image.open(files["target"])).shape[:2]
    assert got.shape == target_hw == expected.shape
    assert got.min() >= 0 and got.max() <= 8  # a label map of the 8 labels asked for
    np.testing.assert_array_equal(got, expected)
    # the overlay and the colour map are shown as images the browser could decode
    for sel in ("img.overlay", "img.color"):
        assert browser.execute_script("return arguments[0].naturalWidth", cards[0].find_element(By.CSS_SELECTOR, sel))
    # and the page says which labels it found
    assert f"{target_hw[1]}×{target_hw[0]}" in cards[0].find_element(By.CSS_SELECTOR, ".meta").text


def test_painted_mask_is_used_exactly(browser, base_url, files, direct):
    _open(browser, base_url)
    _add_example(browser, files["example"])
    canvas = browser.find_element(By.CSS_SELECTOR, ".example canvas.paint")
    # a stroke across the image with label 1
    ActionChains(browser).move_to_element_with_offset(canvas, -60, -20).click_and_hold().move_by_offset(
        100, 30
    ).move_by_offset(20, 20).release().perform()
    assert "mask: painted" in browser.find_element(By.CSS_SELECTOR, ".example .meta").text
    browser.find_element(By.ID, "task").send_keys("instance")
    browser.find_element(By.ID, "target-input").send_keys(str(files["target"]))
    cards = _run_and_wait(browser)
    got = _fetch_png(cards[0].find_element(By.CSS_SELECTOR, "a.dl-labels").get_attribute("href"))
    # the server hands back what was painted; the prediction must be the library's for that label map
    painted = _fetch_png(browser.find_element(By.CSS_SELECTOR, "a.dl-painted").get_attribute("href"))
    assert painted.shape == (120, 160) and set(np.unique(painted)) == {0, 1}
    assert 0.02 < (painted > 0).mean() < 0.9  # a stroke, not a dot or a flood
    direct.set_prompts([files["example"]], [painted], task="instance")
    np.testing.assert_array_equal(got, direct.predict(files["target"]).labels)


def test_bad_file_gets_a_message_in_the_page(browser, base_url, files):
    _open(browser, base_url)
    _add_example(browser, files["example"])
    browser.find_element(By.CSS_SELECTOR, ".example input.mask-input").send_keys(str(files["mask"]))
    browser.find_element(By.ID, "target-input").send_keys(str(files["junk"]))
    browser.find_element(By.ID, "run").click()
    error = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.ID, "error")))
    assert "notes.txt" in error.text and "is not an image" in error.text
    assert "Traceback" not in browser.page_source


def test_video_first_frame_mask_is_propagated(browser, base_url, files, weights):
    from PIL import ImageSequence

    from seggpt.video import SegGPTVideoPredictor

    _open(browser, base_url)
    browser.find_element(By.ID, "video-input").send_keys(str(files["video"]))
    browser.find_element(By.ID, "first-frame").click()  # the server's frame 0 becomes example 1
    _add_example_wait(browser)
    browser.find_element(By.CSS_SELECTOR, ".example input.mask-input").send_keys(str(files["first_mask"]))
    cards = _run_and_wait(browser)
    assert len(cards) == 3  # one result per frame
    assert browser.find_element(By.CSS_SELECTOR, "#animation img").is_displayed()
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(files["video"]))]
    vp = SegGPTVideoPredictor(model=weights, task="semantic")
    expected = [labels for _, labels in vp.propagate(frames, first_masks=files["first_mask"])]
    for card, exp in zip(cards, expected, strict=True):
        np.testing.assert_array_equal(
            _fetch_png(card.find_element(By.CSS_SELECTOR, "a.dl-labels").get_attribute("href")), exp
        )


def _add_example_wait(browser) -> None:
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".example canvas.paint"))
