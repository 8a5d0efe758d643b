"""The confounding sweep: its trend, and a point trained once then reused (its reading: test_readings)."""
import json

import pandas as pd
import pytest

from eiclip_core import sweep
from eiclip_core.errors import KitError
from eiclip_core.profiles import get_profile


def test_trend_is_the_least_squares_slope():
    table = pd.DataFrame({"confounding": [0.0, 0.5, 1.0], "gain": [0.0, 1.0, 2.0]})
    assert sweep.trend(table)["slope"] == pytest.approx(2.0) and sweep.trend(table)["monotonic"]
    flat = pd.DataFrame({"confounding": [0.0, 0.5, 1.0], "gain": [0.5, 0.5, 0.501]})
    assert not sweep.trend(flat)["monotonic"]  # as printed (2 decimals) the gain does not rise


def test_real_data_has_no_sweep(tmp_path):
    with pytest.raises(KitError, match="no confounding sweep"):
        sweep.run_sweep(get_profile("paper"), tmp_path)


@pytest.mark.slow  # about 45 s on 2 idle cores (two real 1-step runs and their evaluation)
def test_point_is_trained_once_then_read_from_cache(tmp_path, monkeypatch):
    # smoke data, one optimiser step per run: the cheapest real point
    profile = get_profile("smoke", sweep_products=(32, 16), sweep_epochs=1, batch_size=32, confounding_sweep=(1.0,))
    assert sweep.sweep_steps(profile) == 1
    first = sweep.run_point(profile, tmp_path, 1.0, seed=0)
    out = tmp_path / "sweep" / "conf1"
    assert set(first["metrics"]) == {"clip-ft", "ei-clip"} and 0 <= first["metrics"]["ei-clip"]["mean"] <= 100
    for row in ("clip-ft", "ei-clip"):
        run = out / "runs" / row / "seed0"
        assert json.loads((run / "done.json").read_text())["steps"] == 1
        assert (run / "final.pt").exists() and not (run / "checkpoints").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("the sweep retrained a cached point")

    monkeypatch.setattr("eiclip_core.train.train", no_training)
    assert sweep.run_point(profile, tmp_path, 1.0, seed=0) == first
    table = sweep.run_sweep(profile, tmp_path, seed=0)
    assert table["gain"].tolist() == [first["metrics"]["ei-clip"]["mean"] - first["metrics"]["clip-ft"]["mean"]]
    changed = get_profile("smoke", sweep_products=(32, 16), sweep_epochs=1, batch_size=32, lr=2e-4)
    with pytest.raises(AssertionError, match="retrained"):  # another setting: the cache does not apply
        sweep.run_point(changed, tmp_path, 1.0, seed=0)
