"""Weights by Hugging Face hub id, resolved with ``huggingface_hub`` into its standard cache.

Every place that takes a checkpoint path also takes an id (see :func:`resolve`):

    BAAI/seggpt-vit-large        a ``transformers`` repo: its ``config.json`` and ``model.safetensors``
                                 (or ``pytorch_model.bin``); the folder of the two is read like a local one
    BAAI/SegGPT                  the authors' repo: its file ``seggpt_vit_large.pth`` (:data:`KNOWN_FILES`)
    OWNER/REPO/FILE              one file of any repo (``FILE`` may have folders: ``OWNER/REPO/sub/w.pth``)
    ...@REVISION                 any of these at a branch, tag or commit (``BAAI/SegGPT@main``); default main

A local path that exists always wins over an id spelt the same. Files land where ``huggingface_hub`` puts them
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and are shared with every other
program that uses that cache. Offline (``HF_HUB_OFFLINE=1``, or no network) a cached id loads from the cache;
one that is not cached raises :class:`FileNotFoundError` whose one line says what to run where there is a
network. Resolution only finds files; reading them stays with :mod:`seggpt.checkpoint` (strict, weights only).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Repos whose checkpoint is one file and that have no config.json: the id alone names that file.
KNOWN_FILES = {"BAAI/SegGPT": "seggpt_vit_large.pth"}
# The weights of a transformers repo, in the order from_pretrained prefers them.
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")

# One part of a repo id as the hub allows it: word characters, '.', '-'; starts and ends with a word character.
_NAME = re.compile(r"^\w(?:[\w.-]{0,94}\w)?$")


class HubError(ValueError):
    """A hub id that cannot be resolved (no such repo, file or revision; gated); the message says what to do."""


@dataclass(frozen=True)
class HubId:
    """``repo_id[/filename][@revision]``, parsed; ``filename`` None means "the repo's checkpoint"."""

    repo_id: str
    filename: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        name = f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id
        return f"{name}@{self.revision}" if self.revision else name


def parse(source: str | os.PathLike) -> HubId | None:
    """The hub id ``source`` spells, or None when it cannot be one (then it is only a path).

    Only strings can be ids. Paths that start with ``/``, ``.`` or ``~``, or hold a backslash or a colon, are
    paths; so is a single name without ``/``. This does not look at the disk: :func:`resolve` lets an existing
    local path win first.
    """
    if not isinstance(source, str) or not source or source[0] in "/.~" or "\\" in source or ":" in source:
        return None
    body, at, revision = source.partition("@")
    if at and not revision:
        return None
    parts = body.split("/")
    if len(parts) < 2 or not all(_NAME.match(p) for p in parts[:2]):
        return None
    if any(".." in p or "--" in p for p in parts[:2]) or parts[1].endswith(".git"):
        return None  # the hub refuses these names; whatever this is, it is not an id
    files = parts[2:]
    if any(p in ("", ".", "..") for p in files):
        return None
    return HubId("/".join(parts[:2]), "/".join(files) or None, revision or None)


def cache_dir() -> Path:
    """The hub cache ``huggingface_hub`` uses, read from the environment now.

    ``huggingface_hub`` reads these variables once, when it is imported; reading them here at each call lets a
    notebook or a test that sets them later be obeyed. The order is the library's own."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        path = env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]
    else:
        home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
        path = os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(path)))


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value, now or when huggingface_hub loaded."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if flag.strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve(source: str | os.PathLike) -> Path:
    """A local path for ``source``: itself if it exists or is no hub id, else the id's files in the hub cache.

    Returns:
        a file (``OWNER/REPO/FILE``, :data:`KNOWN_FILES`) or a snapshot folder holding ``config.json`` and the
        weights (a transformers repo). A source that is neither an existing path nor an id comes back as its
        path, for the reader to report missing.

    Raises:
        FileNotFoundError: the id is not cached and the hub cannot be reached (offline or no network).
        HubError: the hub says there is no such repo, file or revision, or the repo is gated.
    """
    path = Path(source).expanduser()
    hid = None if path.exists() else parse(os.fspath(source))
    if hid is None:
        return path
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise HubError(
            f"{source} is no local path, and reading it as a Hugging Face hub id needs huggingface_hub, which is "
            "not installed: pip install huggingface_hub"
        ) from None
    filename = hid.filename or KNOWN_FILES.get(hid.repo_id)
    if filename is not None:
        found = _fetch(hid, filename, hid)
        if found is None:
            raise HubError(f"{hid} is no local path, and {hid.repo_id} has no file {filename}" + _listing(hid))
    else:
        found = _transformers_folder(hid)
    log.info("%s -> %s", source, found)
    return found


def _transformers_folder(hid: HubId) -> Path:
    config = _fetch(hid, "config.json", hid, need=("config.json", TRANSFORMERS_WEIGHTS[0]))
    if config is None:
        raise HubError(
            f"{hid} is no local path, and {hid.repo_id} has no config.json, so it is no transformers checkpoint: "
            f"name its checkpoint file, {hid.repo_id}/FILE" + _listing(hid)
        )
    # The weights from the very commit the config came from (its snapshot folder is named by the commit hash).
    pinned = HubId(hid.repo_id, None, config.parent.name)
    not_cached = None
    for name in TRANSFORMERS_WEIGHTS:
        try:
            if _fetch(pinned, name, hid, need=("config.json", name)) is not None:
                return config.parent
        except FileNotFoundError as e:  # offline: the other format may be the one cached
            not_cached = not_cached or e
    if not_cached is not None:
        raise not_cached
    raise HubError(f"{hid} has config.json but neither of {', '.join(TRANSFORMERS_WEIGHTS)}")


def _fetch(hid: HubId, filename: str, shown: HubId, need: tuple[str, ...] | None = None) -> Path | None:
    """One file of the repo through the cache; None when the repo has no such file (the hub said so, now or in
    an earlier answer the cache recorded). ``shown``: the id as given, for messages; ``need``: the files a
    download command should name."""
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = cache_dir()
    try:
        local = hf_hub_download(
            hid.repo_id, filename, revision=hid.revision, cache_dir=cache, local_files_only=offline()
        )
        return Path(local)
    except LocalEntryNotFoundError:  # not cached, and the hub was not asked (offline) or did not answer
        if try_to_load_from_cache(hid.repo_id, filename, cache_dir=cache, revision=hid.revision) is _CACHED_NO_EXIST:
            return None
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached"
        rev = f" --revision {shown.revision}" if shown.revision else ""
        raise FileNotFoundError(
            f"{shown} is no local path and not in the Hugging Face cache ({cache}), and {why}; where there is a "
            f"network, run `hf download {hid.repo_id} {' '.join(need or (filename,))}{rev}` (same HF_HOME or "
            "HF_HUB_CACHE), then this again"
        ) from None
    except EntryNotFoundError:  # the hub answered: no such file (RemoteEntryNotFoundError)
        return None
    except GatedRepoError:
        raise HubError(
            f"{hid.repo_id} is gated: accept its terms on https://huggingface.co/{hid.repo_id} and log in "
            "(hf auth login)"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{shown} is no local path, and {hid.repo_id} is no model repository on the Hugging Face hub (or a "
            "private one: log in with hf auth login)"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"{hid.repo_id} has no revision {shown.revision!r} (a branch, tag or commit hash)") from None
    except HfHubHTTPError as e:
        raise HubError(f"the Hugging Face hub did not give {shown}: {str(e).splitlines()[0]}") from None


def _listing(hid: HubId) -> str:
    """'; it holds a.pth, b.safetensors': the checkpoint-like files of the repo, from the hub or the cache."""
    names: list[str] = []
    if offline():
        snapshots = cache_dir() / f"models--{hid.repo_id.replace('/', '--')}" / "snapshots"
        if snapshots.is_dir():
            names = sorted({p.relative_to(s).as_posix() for s in snapshots.iterdir() for p in s.rglob("*")})
    else:
        try:
            from huggingface_hub import HfApi

            names = HfApi().list_repo_files(hid.repo_id, revision=hid.revision)
        except Exception:  # only a hint: the error it decorates says what matters
            names = []
    names = [n for n in names if n.endswith(CHECKPOINT_SUFFIXES)]
    return f"; it holds {', '.join(names[:8])}" if names else ""
