"""Resuming evaluations: the work done survives a Ctrl-C, a crash or a bad file.

The runners' loops go through :func:`units`: ``for ep in units(episodes, meter): ... meter.update(...)``. While a
:class:`Journal` is active (``seggpt eval`` opens one beside its report), every finished unit is recorded with a
snapshot of the state the loop accumulates (meters, per-item records), and the journal is written to its file
atomically every few seconds, when Ctrl-C asks to stop, and when the run fails. A run that resumes from the file
restores each loop's state and skips the units it had finished. The runners are deterministic and their states
are sums or records of finished units, so the resumed run reports exactly what an uninterrupted one would.

Loops are told apart by their order in the run (the third loop of a resumed run is the third loop of the first
one) and checked by their length; a journal written by another run (other options, weights, data) is refused.
Without an active journal :func:`units` is a plain iteration. A unit that takes long (a video of many frames)
calls :func:`stop_point` as it goes, so that a stop does not wait for the whole unit: the unit's partial work is
dropped and done again on resume.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from seggpt.io import atomic_write

T = TypeVar("T")
VERSION = 1
_ACTIVE: Journal | None = None


class EvalStopped(KeyboardInterrupt):
    """An evaluation stopped by Ctrl-C (or SIGTERM) after ``done`` work units, its journal written to ``path``."""

    def __init__(self, done: int, path: Path) -> None:
        super().__init__(f"stopped after {done} work unit(s), the state in {path}")
        self.done, self.path = done, path


class Journal:
    """The finished work units of one evaluation and the states they added up to, kept in ``path``.

    Args:
        path: the state file.
        fingerprint: what makes two runs the same run (benchmark, options, model, data, shard); a file written
            under another fingerprint is refused.
        resume: continue from ``path`` if it exists (otherwise it is replaced).
        stop: an object whose ``requested`` attribute asks to stop after the current unit
            (:class:`seggpt.stopping.StopRequest`), or None.
        every: seconds between writes while running.
    """

    def __init__(
        self, path: str | Path, fingerprint: dict, resume: bool = False, stop: Any = None, every: float = 10.0
    ) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.stop = stop
        self.every = every
        self.loops: list[tuple[int, int, bytes]] = []  # per loop: (length, units done, pickled state)
        self.elapsed = 0.0  # seconds spent by earlier runs
        self.resumed = 0  # units the earlier runs had done
        self._next = 0  # the next loop's index
        self._written = time.monotonic()
        if resume and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                saved = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
            raise ValueError(
                f"cannot read the evaluation state {self.path} ({e}); delete it, or pass --overwrite to start afresh"
            ) from None
        if not isinstance(saved, dict) or saved.get("version") != VERSION:
            raise ValueError(
                f"{self.path} is not an evaluation state of this version; pass --overwrite to start afresh"
            )
        if saved["fingerprint"] != self.fingerprint:
            old, new = _flat(saved["fingerprint"]), _flat(self.fingerprint)
            diff = [
                f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
            ]
            raise ValueError(
                f"{self.path} was written by another run (it differs in: {'; '.join(diff)}); run the same command "
                "as before to resume it, or pass --overwrite to start afresh"
            )
        self.loops = list(saved["loops"])
        self.elapsed = float(saved.get("elapsed", 0.0))
        self.resumed = self.done

    @property
    def done(self) -> int:
        """Work units finished, in all loops together."""
        return sum(d for _, d, _ in self.loops)

    def save(self, elapsed: float = 0.0) -> None:
        """Write the journal now (atomically: a reader sees the old file or the new one)."""
        data = pickle.dumps(
            {
                "version": VERSION,
                "fingerprint": self.fingerprint,
                "loops": self.loops,
                "elapsed": self.elapsed + elapsed,
            }
        )
        atomic_write(self.path, lambda tmp: Path(tmp).write_bytes(data), overwrite=True)
        self._written = time.monotonic()

    def stop_if_asked(self) -> None:
        """If a stop was asked for: write the journal (the units finished) and raise :class:`EvalStopped`."""
        if self.stop is not None and self.stop.requested:
            self.save()
            raise EvalStopped(self.done, self.path)

    def begin(self, items: Sequence[T], state: tuple) -> tuple[int, int]:
        """Start the next loop: restore its state if an earlier run began it; returns (its index, units done)."""
        i = self._next
        self._next += 1
        if i < len(self.loops):
            length, start, blob = self.loops[i]
            if length != len(items):
                raise ValueError(
                    f"{self.path}: loop {i} had {length} work units and now has {len(items)}; the data changed "
                    "since the state was written: pass --overwrite to start afresh"
                )
            for obj, old in zip(state, pickle.loads(blob), strict=True):
                _restore(obj, old)
            return i, start
        self.loops.append((len(items), 0, pickle.dumps(state)))
        return i, 0

    def finished(self, i: int, length: int, done: int, state: tuple) -> None:
        """Unit ``done - 1`` of loop ``i`` is finished and in ``state``: record it; stop if asked to."""
        self.loops[i] = (length, done, pickle.dumps(state))
        self.stop_if_asked()
        if time.monotonic() - self._written >= self.every:
            self.save()


class _Units:
    """The remaining units of a loop, with a length (for progress bars)."""

    def __init__(self, items: list, state: tuple, journal: Journal | None) -> None:
        self.items, self.state, self.journal = items, state, journal
        self.index, self.start = journal.begin(items, state) if journal is not None else (0, 0)

    def __len__(self) -> int:
        return len(self.items) - self.start

    def __iter__(self) -> Iterator:
        for k in range(self.start, len(self.items)):
            yield self.items[k]
            # The loop's body has finished unit k and added it to the state.
            if self.journal is not None:
                self.journal.finished(self.index, len(self.items), k + 1, self.state)


def units(items: Sequence[T], *state: Any) -> _Units:
    """Iterate over a loop's work units so that an evaluation can resume: ``state`` are the mutable objects the
    loop's body adds each unit to (meters, dicts, lists), restored in place when a journal resumes the loop.

    Call it where the loop starts (it restores the state at once); the body must finish each unit before the
    next is asked for, and a unit whose body raised is not counted.
    """
    return _Units(list(items), state, _ACTIVE)


def stop_point() -> None:
    """Inside a long work unit (a video's frames): stop now if asked to, with the journal of the units finished.

    The unit under way is dropped, not finished: a resumed run does it again from its start. Without an active
    journal, or with no stop asked for, it does nothing.
    """
    if _ACTIVE is not None:
        _ACTIVE.stop_if_asked()


def activate(journal: Journal | None) -> Journal | None:
    """Make ``journal`` the one :func:`units` records into (None: none); returns the previous one."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, journal
    return previous


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict with dotted keys, so that a difference names the option that differs."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _restore(obj: Any, old: Any) -> None:
    """Put the saved ``old`` state into the live ``obj`` in place (the runner holds references to it)."""
    if isinstance(obj, dict):
        obj.clear()
        obj.update(old)
    elif isinstance(obj, list):
        obj[:] = old
    elif hasattr(obj, "__dict__"):
        obj.__dict__.clear()
        obj.__dict__.update(old.__dict__)
    else:  # numpy arrays and the like
        obj[...] = old
