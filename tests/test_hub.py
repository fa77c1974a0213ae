"""Weights by Hugging Face hub id: the cache is laid out here as huggingface_hub writes it, offline.

A repo in the cache is ``models--OWNER--NAME/`` with ``refs/<branch or tag>`` (the commit hash, no newline),
``blobs/<etag>`` (sha256 of the content for LFS files such as weights, the git blob sha1 for small text files such
as config.json) and ``snapshots/<commit>/<path>``, relative symlinks into ``blobs``. Loading by id must give
exactly what loading the same files by path gives, and the weights the test saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seggpt.checkpoint as ck
from conftest import randomize_
from seggpt.cli import main
from seggpt.config import vit_tiny
from seggpt.hub import HubError, HubId, parse
from seggpt.modeling import SegGPT

LFS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")  # in the hub's default .gitattributes
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def etag(name: str, data: bytes) -> str:
    """The blob name huggingface_hub gives a file: sha256 for LFS files, the git blob sha1 for the others."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def put(cache: Path, repo: str, files: dict[str, Path], commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Lay ``files`` (name in the repo -> a file written by the test) into the cache at ``commit``."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    for name, src in files.items():
        data = src.read_bytes()
        blob = folder / "blobs" / etag(name, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return folder


def _model(seed: int) -> SegGPT:
    torch.manual_seed(seed)
    return randomize_(SegGPT(vit_tiny()), std=0.1).eval()


def _same(a: SegGPT, b: dict) -> None:
    sa = a.state_dict()
    assert sa.keys() == b.keys()
    for k, v in b.items():
        assert torch.equal(sa[k], v), k


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty hub cache in HF_HUB_CACHE, offline; the tests put repos in it."""
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two tiny models, each written by the project's writers in the three formats (outside any cache)."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for tag, seed in (("a", 1), ("b", 2)):
        m = _model(seed)
        sd = {k: v.clone() for k, v in m.state_dict().items()}
        hf = ck.save_hf(sd, m.config, root / f"hf_{tag}")
        out[tag] = {
            "sd": sd,
            "hf": hf,
            "pth": ck.save_official(sd, root / f"official_{tag}.pth"),  # as the authors released it: no config
            "native": ck.save_native(m, root / f"native_{tag}.safetensors"),
        }
    return out


def _hf_files(folder: Path) -> dict[str, Path]:
    return {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"}


# The authors' .pth records no config; shapes cannot tell a tiny model's merge index and taps.
TINY = {"merge_index": vit_tiny().merge_index, "out_indices": vit_tiny().out_indices}


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_transformers_repo_by_id_equals_by_path(saved, tmp_path, monkeypatch, variable):
    root = tmp_path / "home"
    cache = root / "hub" if variable == "HF_HOME" else root
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    put(cache, "BAAI/seggpt-vit-large", _hf_files(saved["a"]["hf"]), COMMIT_A)
    by_id = ck.load_model("BAAI/seggpt-vit-large")
    by_path = ck.load_model(saved["a"]["hf"])
    assert by_id.config == by_path.config
    _same(by_id, by_path.state_dict())
    _same(by_id, saved["a"]["sd"])
    # read_checkpoint (convert, train's init_from) resolves the same way
    sd, cfg = ck.read_checkpoint("BAAI/seggpt-vit-large")
    assert cfg == by_path.config and all(torch.equal(sd[k], v) for k, v in saved["a"]["sd"].items())


def test_authors_repo_by_id_is_its_pth(saved, cache):
    put(cache, "BAAI/SegGPT", {"seggpt_vit_large.pth": saved["a"]["pth"]}, COMMIT_A)
    by_id = ck.load_model("BAAI/SegGPT", **TINY)
    by_path = ck.load_model(saved["a"]["pth"], **TINY)
    assert by_id.config == by_path.config
    _same(by_id, by_path.state_dict())
    _same(by_id, saved["a"]["sd"])


def test_one_file_of_any_repo(saved, cache):
    put(cache, "someone/checkpoints", {"runs/tiny.safetensors": saved["b"]["native"]}, COMMIT_A)
    put(cache, "someone/checkpoints", {"other.pth": saved["a"]["pth"]}, COMMIT_A)
    _same(ck.load_model("someone/checkpoints/runs/tiny.safetensors"), saved["b"]["sd"])
    _same(ck.load_model("someone/checkpoints/other.pth", **TINY), saved["a"]["sd"])


def test_revision_picks_the_commit_branch_or_tag(saved, cache):
    put(cache, "someone/tiny", _hf_files(saved["a"]["hf"]), COMMIT_A, refs=("v1",))
    put(cache, "someone/tiny", _hf_files(saved["b"]["hf"]), COMMIT_B, refs=("main",))
    _same(ck.load_model("someone/tiny"), saved["b"]["sd"])
    _same(ck.load_model("someone/tiny@main"), saved["b"]["sd"])
    _same(ck.load_model("someone/tiny@v1"), saved["a"]["sd"])
    _same(ck.load_model(f"someone/tiny@{COMMIT_A}"), saved["a"]["sd"])
    put(cache, "someone/files", {"w.safetensors": saved["a"]["native"]}, COMMIT_A, refs=("old",))
    put(cache, "someone/files", {"w.safetensors": saved["b"]["native"]}, COMMIT_B)
    _same(ck.load_model("someone/files/w.safetensors@old"), saved["a"]["sd"])
    _same(ck.load_model("someone/files/w.safetensors"), saved["b"]["sd"])


def test_an_existing_local_path_wins(saved, cache, tmp_path, monkeypatch):
    put(cache, "someone/files", {"w.safetensors": saved["a"]["native"]}, COMMIT_A)
    local = tmp_path / "cwd" / "someone" / "files" / "w.safetensors"
    local.parent.mkdir(parents=True)
    local.write_bytes(saved["b"]["native"].read_bytes())
    monkeypatch.chdir(tmp_path / "cwd")
    _same(ck.load_model("someone/files/w.safetensors"), saved["b"]["sd"])


def test_a_missing_id_offline_is_one_line_saying_what_to_run(cache):
    cases = {
        "BAAI/seggpt-vit-large": "hf download BAAI/seggpt-vit-large config.json model.safetensors`",
        "BAAI/SegGPT": "hf download BAAI/SegGPT seggpt_vit_large.pth`",
        "someone/repo/sub/w.pth@v2": "hf download someone/repo sub/w.pth --revision v2`",
    }
    for source, command in cases.items():
        with pytest.raises(FileNotFoundError) as e:
            ck.load_model(source)
        message = str(e.value)
        assert "\n" not in message and command in message and "HF_HUB_OFFLINE" in message, message
        assert str(cache) in message


def test_the_cli_reports_a_missing_id_in_one_line(cache, tmp_path, capsys):
    target = tmp_path / "t.jpg"  # a real target, so the missing weights are the only thing to report
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(target)
    argv = ["segment", "--weights", "BAAI/SegGPT", "--prompt", "a.jpg", "a.png", "--out", str(tmp_path / "o")]
    code = main([*argv, str(target)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("seggpt segment: error: BAAI/SegGPT is no local path"), err
    assert "hf download BAAI/SegGPT seggpt_vit_large.pth" in err


def test_a_repo_without_config_json_asks_for_the_file(saved, cache):
    # huggingface_hub records a file the hub said is absent as .no_exist/<commit>/<name>.
    folder = put(cache, "someone/weights", {"w1.pth": saved["a"]["pth"], "w2.pth": saved["b"]["pth"]}, COMMIT_A)
    (folder / ".no_exist" / COMMIT_A).mkdir(parents=True)
    (folder / ".no_exist" / COMMIT_A / "config.json").touch()
    with pytest.raises(HubError, match=r"no config\.json.*someone/weights/FILE; it holds w1\.pth, w2\.pth"):
        ck.load_model("someone/weights")
    with pytest.raises(HubError, match="has no file w3.pth"):
        (folder / ".no_exist" / COMMIT_A / "w3.pth").touch()
        ck.load_model("someone/weights/w3.pth")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("BAAI/SegGPT", HubId("BAAI/SegGPT")),
        ("BAAI/seggpt-vit-large@main", HubId("BAAI/seggpt-vit-large", None, "main")),
        ("o/r/sub/w.pth@refs/pr/1", HubId("o/r", "sub/w.pth", "refs/pr/1")),
        ("runs/x/model.safetensors", HubId("runs/x", "model.safetensors")),  # a missing relative path reads as one
        ("model.pth", None),
        ("./o/r", None),
        ("/abs/o/r", None),
        ("~/o/r", None),
        ("C:\\w\\x.pth", None),
        ("o/r@", None),
        ("o/../r", None),
        ("o--x/r", None),
        ("o/r//w.pth", None),
        ("-o/r", None),
    ],
)
def test_parse(text, expected):
    assert parse(text) == expected
    assert parse(Path(text)) is None  # only strings are ids


def _images(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "ex.jpg")
    lab = np.zeros((40, 48), np.uint8)
    lab[5:20, 8:30] = 1
    Image.fromarray(lab).save(root / "ex_mask.png")
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(root / "target.jpg")
    return ["--prompt", str(root / "ex.jpg"), str(root / "ex_mask.png"), "--no-progress", str(root / "target.jpg")]


def test_segment_by_id_end_to_end(saved, cache, tmp_path, capsys):
    put(cache, "someone/tiny-seggpt", _hf_files(saved["a"]["hf"]), COMMIT_A)
    common = _images(tmp_path)
    assert main(["segment", "--weights", "someone/tiny-seggpt", "--out", str(tmp_path / "id"), *common]) == 0
    assert main(["segment", "--weights", str(saved["a"]["hf"]), "--out", str(tmp_path / "path"), *common]) == 0
    for name in ("target.png", "target_color.png"):
        by_id, by_path = (np.asarray(Image.open(tmp_path / d / name)) for d in ("id", "path"))
        assert by_id.shape[:2] == (30, 50) and np.array_equal(by_id, by_path), name


def test_no_network_loads_a_cached_id(saved, cache, tmp_path):
    """HF_HUB_OFFLINE unset and the hub unreachable (a closed local port): the cached id still loads."""
    put(cache, "someone/tiny-seggpt", _hf_files(saved["a"]["hf"]), COMMIT_A)
    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_CACHE=str(cache))
    out = tmp_path / "out"
    argv = ["segment", "--weights", "someone/tiny-seggpt", "--out", str(out), *_images(tmp_path)]
    done = subprocess.run([sys.executable, "-m", "seggpt.cli", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "target.png").is_file()


def test_train_init_from_an_id(saved, cache):
    from seggpt.train import load_config
    from seggpt.train.trainer import build_model

    put(cache, "someone/tiny-seggpt", _hf_files(saved["a"]["hf"]), COMMIT_A)
    cfg = load_config(None, ["model.preset=None", "model.init_from=someone/tiny-seggpt"])
    _same(build_model(cfg), saved["a"]["sd"])


# Online: a stand-in for the hub on a local port, answering as huggingface.co does (HEAD/GET resolve/REV/FILE with
# X-Repo-Commit, ETag or X-Linked-Etag; errors as X-Error-Code), so the real huggingface_hub downloads from it.
class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo -> {"refs": {name: commit}, "files": {commit: {path: bytes}}}
        self.gated: set[str] = set()

    def add(self, repo: str, files: dict[str, Path], commit: str, refs: tuple[str, ...] = ("main",)) -> None:
        r = self.repos.setdefault(repo, {"refs": {}, "files": {}})
        r["files"].setdefault(commit, {}).update({name: src.read_bytes() for name, src in files.items()})
        r["refs"].update(dict.fromkeys(refs, commit))

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        from urllib.parse import unquote

        path = unquote(path.split("?")[0])
        api = path.startswith("/api/models/")
        owner, name, kind, rest = path.removeprefix("/api/models/").lstrip("/").split("/", 3)
        repo, (rev, _, file) = f"{owner}/{name}", rest.partition("/")
        if repo in self.gated:
            return 401, {"X-Error-Code": "GatedRepo"}, b""
        if repo not in self.repos:
            return 401, {"X-Error-Code": "RepoNotFound"}, b""
        r = self.repos[repo]
        commit = r["refs"].get(rev, rev if rev in r["files"] else None)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b""
        files = r["files"][commit]
        if api and kind == "tree":
            listing = [{"type": "file", "path": p, "size": len(d), "oid": etag(p, d)} for p, d in files.items()]
            return 200, {"Content-Type": "application/json"}, json.dumps(listing).encode()
        if file not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b""
        data, lfs = files[file], file.endswith(LFS_SUFFIXES)
        tag = (
            {"X-Linked-Etag": f'"{etag(file, data)}"', "ETag": '"lfs-pointer"'}
            if lfs
            else {"ETag": f'"{etag(file, data)}"'}
        )
        return 200, {"X-Repo-Commit": commit, "Content-Length": str(len(data)), **tag}, data


@pytest.fixture
def hub(cache, monkeypatch):
    """A FakeHub served on 127.0.0.1, with huggingface_hub pointed at it and online (HF_HUB_OFFLINE unset)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from huggingface_hub import constants, file_download

    fake = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, body: bool) -> None:
            status, headers, data = fake.answer(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):  # noqa: N802 (http.server's names)
            self._reply(False)

        def do_GET(self):  # noqa: N802
            self._reply(True)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template, raising=False)  # < 1.0 copies it
    yield fake
    server.shutdown()
    server.server_close()


def test_online_downloads_into_the_cache_as_laid_out_here(saved, cache, hub, tmp_path, monkeypatch):
    hub.add("someone/online-tiny", _hf_files(saved["a"]["hf"]), COMMIT_A)
    _same(ck.load_model("someone/online-tiny"), saved["a"]["sd"])
    # huggingface_hub wrote exactly the layout put() writes for the tests above: refs, snapshots, relative links
    # into blobs named by the ETag the hub sends (the hub's rule, sha256 or git sha1, is etag()'s own).
    expected = tmp_path / "expected"
    put(expected, "someone/online-tiny", _hf_files(saved["a"]["hf"]), COMMIT_A)

    def layout(root: Path) -> dict[str, str]:
        folder = root / "models--someone--online-tiny"
        return {
            p.relative_to(folder).as_posix(): os.readlink(p) if p.is_symlink() else p.read_bytes().hex()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }

    assert layout(cache) == layout(expected)
    # The same id later, offline: from what was downloaded.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _same(ck.load_model("someone/online-tiny"), saved["a"]["sd"])


def test_online_errors_and_fallbacks(saved, cache, hub, tmp_path):
    from safetensors.torch import load_file

    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    torch.save(load_file(saved["b"]["hf"] / "model.safetensors"), bin_only / "pytorch_model.bin")
    hub.add("someone/bin-tiny", {"config.json": saved["b"]["hf"] / "config.json", "pytorch_model.bin": bin_only /
            "pytorch_model.bin"}, COMMIT_B)  # fmt: skip
    _same(ck.load_model("someone/bin-tiny"), saved["b"]["sd"])  # no model.safetensors: pytorch_model.bin

    hub.add("someone/weights", {"w1.pth": saved["a"]["pth"]}, COMMIT_A)
    hub.gated.add("someone/gated")
    cases = {
        "someone/absent": "someone/absent is no local path, and someone/absent is no model repository",
        "someone/gated": "someone/gated is gated: accept its terms",
        "someone/weights@v9": "someone/weights has no revision 'v9'",
        "someone/weights/w2.pth": r"has no file w2\.pth; it holds w1\.pth",
        "someone/weights": r"no config\.json.*someone/weights/FILE; it holds w1\.pth",
    }
    for source, message in cases.items():
        with pytest.raises(HubError, match=message):
            ck.load_model(source)
