"""seggpt.eval.resume: loops that survive a stop, restored in place, refused when the run is another."""

from __future__ import annotations

import numpy as np
import pytest

from seggpt.eval.metrics import FewShotMeter
from seggpt.eval.resume import EvalStopped, Journal, activate, stop_point, units


class Stop:
    requested = False


def _run(journal, stop_after=None, stop=None):
    """Two loops summing into a meter-like object, a dict and a list; asks to stop after ``stop_after`` units."""
    previous = activate(journal)
    seen = []
    try:
        total, per_item, order = FewShotMeter((1,)), {}, []
        for k in units(range(5), total, per_item):
            seen.append(k)
            gt = np.zeros((2, 2), np.uint8)
            gt[0, : k % 3] = 1
            total.update(1, gt.astype(bool), gt)
            per_item[k] = k * k
            if stop is not None and len(seen) == stop_after:
                stop.requested = True
        for k in units(["a", "b", "c"], order):
            seen.append(k)
            order.append(k.upper())
            if stop is not None and len(seen) == stop_after:
                stop.requested = True
        return (total, per_item, order), seen
    finally:
        activate(previous)


@pytest.mark.parametrize("stop_after", [1, 3, 5, 6, 7])
def test_a_stopped_run_resumed_gives_what_an_uninterrupted_one_does(tmp_path, stop_after):
    whole, seen = _run(None)
    assert seen == [0, 1, 2, 3, 4, "a", "b", "c"]
    stop = Stop()
    with pytest.raises(EvalStopped) as e:
        _run(Journal(tmp_path / "s", {"run": 1}, stop=stop), stop_after, stop)
    assert e.value.done == stop_after and (tmp_path / "s").is_file()
    journal = Journal(tmp_path / "s", {"run": 1}, resume=True)
    assert journal.resumed == stop_after
    state, seen = _run(journal)
    assert seen == [0, 1, 2, 3, 4, "a", "b", "c"][stop_after:]  # only the work not done
    for field in ("intersection", "union", "episodes"):
        np.testing.assert_array_equal(getattr(state[0], field), getattr(whole[0], field))
    assert state[1] == whole[1] and state[2] == whole[2]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # written atomically: no temporary left


def test_a_failing_unit_is_not_counted(tmp_path):
    journal = Journal(tmp_path / "s", {"run": 1})
    previous = activate(journal)
    try:
        items = {}
        with pytest.raises(ValueError, match="bad file"):
            for k in units(range(4), items):
                items[k] = 1  # the state changes before the failure ...
                if k == 2:
                    raise ValueError("bad file")
    finally:
        activate(previous)
    journal.save()
    resumed = Journal(tmp_path / "s", {"run": 1}, resume=True)
    assert resumed.done == 2  # ... but the journal holds the state after unit 1
    previous = activate(resumed)
    try:
        items = {}
        assert list(units(range(4), items)) == [2, 3] and items == {0: 1, 1: 1}
    finally:
        activate(previous)


def test_another_run_or_other_data_is_refused(tmp_path):
    stop = Stop()
    with pytest.raises(EvalStopped):
        _run(Journal(tmp_path / "s", {"options": {"shots": 1}}, stop=stop), 2, stop)
    with pytest.raises(ValueError, match=r"another run .*options.shots 1 -> 2.*--overwrite"):
        Journal(tmp_path / "s", {"options": {"shots": 2}}, resume=True)
    journal = Journal(tmp_path / "s", {"options": {"shots": 1}}, resume=True)
    previous = activate(journal)
    try:
        with pytest.raises(ValueError, match="had 5 work units and now has 4"):
            units(range(4), {})
    finally:
        activate(previous)
    (tmp_path / "t").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read the evaluation state"):
        Journal(tmp_path / "t", {}, resume=True)
    assert Journal(tmp_path / "t", {}).done == 0  # without resume an old file is no matter: it will be replaced


def test_without_a_journal_units_is_a_plain_loop():
    state = {}
    loop = units([3, 1, 2], state)
    assert len(loop) == 3 and list(loop) == [3, 1, 2]


def _frames(journal, stop=None, stop_at=None):
    """Two 'videos' of four frames, each frame checking for a stop; asks to stop at frame ``stop_at``."""
    previous = activate(journal)
    seen = []
    try:
        scores = {}
        for video in units(["v0", "v1"], scores):
            frames = []
            for t in range(4):
                stop_point()
                seen.append((video, t))
                frames.append(t + len(video))
                if stop is not None and (video, t) == stop_at:
                    stop.requested = True
            scores[video] = frames
        return scores, seen
    finally:
        activate(previous)


def test_a_stop_inside_a_long_unit_drops_that_unit_and_resume_does_it_again(tmp_path):
    """Was: a stop waited for the whole sequence (a DAVIS video at 288x512 takes minutes)."""
    whole, _ = _frames(None)
    stop = Stop()
    with pytest.raises(EvalStopped) as e:
        _frames(Journal(tmp_path / "s", {"run": 1}, stop=stop), stop, ("v1", 1))
    assert e.value.done == 1  # v0 finished; v1 stopped at its third frame, not finished
    journal = Journal(tmp_path / "s", {"run": 1}, resume=True)
    state, seen = _frames(journal)
    assert seen == [("v1", t) for t in range(4)]  # v1 again from its first frame
    assert state == whole
    stop_point()  # no journal: nothing to stop


def test_a_stop_before_any_unit_is_finished_keeps_an_empty_journal(tmp_path):
    stop = Stop()
    with pytest.raises(EvalStopped) as e:
        _frames(Journal(tmp_path / "s", {"run": 1}, stop=stop), stop, ("v0", 0))
    assert e.value.done == 0 and Journal(tmp_path / "s", {"run": 1}, resume=True).resumed == 0
