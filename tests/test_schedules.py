"""Learning-rate schedules: the shapes users expect from their names."""

from __future__ import annotations

import pytest

from lenet5.config import ScheduleConfig
from lenet5.training.schedules import Schedule


def lrs(name, epochs=4, steps=10, lr=1.0, **kw):
    s = Schedule(ScheduleConfig(name=name, **kw), lr, steps, steps * epochs)
    return [s.lr(i) for i in range(steps * epochs)]


def test_constant_with_warmup_rises_linearly_then_holds():
    out = lrs("constant", warmup_epochs=1)
    assert out[0] == pytest.approx(0.1) and out[9] == pytest.approx(1.0) and set(out[10:]) == {1.0}


def test_step_decays_every_step_size_epochs():
    out = lrs("step", step_size=2, gamma=0.5)
    assert out[0] == out[19] == 1.0 and out[20] == out[39] == 0.5


def test_cosine_falls_from_lr_to_min_lr():
    out = lrs("cosine", min_lr=0.01)
    assert out[0] == pytest.approx(1.0) and out[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(out, out[1:]))


def test_onecycle_rises_to_peak_then_anneals():
    out = lrs("onecycle", pct_start=0.25, div_factor=10)
    peak = out.index(max(out))
    assert out[0] == pytest.approx(0.1) and max(out) == pytest.approx(1.0) and peak == 10
    assert out[-1] == pytest.approx(0.0, abs=1e-12)


def test_plateau_reduces_after_patience_and_round_trips_state():
    s = Schedule(ScheduleConfig(name="plateau", patience=1, factor=0.5), 1.0, 10, 100)
    for loss in (0.5, 0.4, 0.45, 0.41):
        s.end_epoch(loss)
    assert s.lr(50) == pytest.approx(0.5)
    t = Schedule(ScheduleConfig(name="plateau", patience=1, factor=0.5), 1.0, 10, 100)
    t.load_state(s.state())
    assert t.lr(50) == s.lr(50) and t.state() == s.state()
