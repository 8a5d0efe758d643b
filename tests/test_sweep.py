"""The confounding sweep: its points, its paired statistics on hand-made tables, and real tiny runs that
are trained once, reused, and retrained only where a run is missing (its reading: test_readings)."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from eiclip_core.analysis import readings
from eiclip_core.analysis import sweep
from eiclip_core.analysis import sweep_statistics
from eiclip_core.errors import KitError
from eiclip_core.pipeline.profiles import get_profile


def runs_table(gains, knob=1.0, base=20.0) -> pd.DataFrame:
    """Hand-made recalls at one knob: CLIP-FT at `base` + seed, EI-CLIP that plus gains[i], one pair per
    (data seed, training seed) = (i // 3, i % 3), and a zero-shot run per data seed."""
    rows = []
    for i, g in enumerate(gains):
        d, k = i // 3, i % 3
        rows += [{"confounding": knob, "data seed": d, "row": "clip-ft", "seed": k, "mean": base + i},
                 {"confounding": knob, "data seed": d, "row": "ei-clip", "seed": k, "mean": base + i + g}]
    zero = [{"confounding": knob, "data seed": d, "row": "zero-shot", "seed": np.nan, "mean": 5.0 + d}
            for d in sorted({i // 3 for i in range(len(gains))})]
    return pd.DataFrame(zero + rows)


def test_science_profile_has_every_point_once_and_its_own_reports():
    from pathlib import Path

    from eiclip_core.pipeline.reproduce import default_dirs

    profile = get_profile("science")
    assert default_dirs(profile) == (Path("data/science"), Path("reports/science"))
    assert profile.train.eval_every > 0  # its main runs draw the validation curves that show whether it converged
    points = sweep.sweep_points(profile)
    assert len(points) == len(set(points)) == 3 * 2 * (1 + 2 * 3)
    assert {p.seed for p in points if p.row == "zero-shot"} == {None}
    assert {(p.data_seed, p.seed) for p in points if p.row == "ei-clip"} == {(d, k) for d in (0, 1) for k in (0, 1, 2)}


def test_paired_gain_on_a_hand_made_table():
    gains = [1.0, 2.0, -0.5, 1.5, 0.0, 3.0]
    table = sweep_statistics.gain_table(runs_table(gains)).iloc[0]
    assert table["gain"] == pytest.approx(np.mean(gains)) and table["std"] == pytest.approx(np.std(gains, ddof=1))
    assert (table["n"], table["method_wins"], table["baseline_wins"]) == (6, 4, 1)
    ft = 20.0 + np.arange(6)
    assert table["p"] == pytest.approx(ttest_rel(ft + gains, ft).pvalue)
    recall = sweep_statistics.recall_table(runs_table(gains))
    assert recall["row"].tolist() == ["zero-shot", "clip-ft", "ei-clip"] and recall["n"].tolist() == [2, 6, 6]


def test_one_pair_is_not_tested_and_the_reading_says_so():
    recalls = pd.concat([runs_table([0.5], knob=0.0), runs_table([2.0], knob=1.0, base=15.0)])
    summary = {"recall": sweep_statistics.recall_table(recalls), "harm": sweep_statistics.harm_table(recalls),
               "gain": sweep_statistics.gain_table(recalls),
               "prone": sweep_statistics.prone_gain_table(pd.DataFrame(columns=["confounding", "type", "status", "n",
                                                                             "data seed", "row", "seed", "mean"]))}
    gain = summary["gain"].set_index("confounding")
    assert gain.loc[1.0, "gain"] == 2.0 and gain.loc[1.0, "n"] == 1 and gain["p"].isna().all()
    harm = summary["harm"].set_index("row")
    assert harm.loc["clip-ft", "harm"] == 5.0 and harm.loc["ei-clip", "harm"] == pytest.approx(3.5)
    line = readings.read_sweep(readings.sweep_numbers("quick", summary))
    assert "profile quick is the small, one-seed version of `science`" in line
    assert "no paired test is possible with one pair" in line and line.count("not tested (fewer than 3 pairs)") == 2
    assert "beyond the spread" not in line.replace("no gain", "")


def test_real_data_has_no_sweep(tmp_path):
    with pytest.raises(KitError, match="no confounding sweep"):
        sweep.run_sweep(get_profile("paper"), tmp_path)


def _done_times(folder) -> dict:
    return {p.parent.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.glob("*/runs/*/*/done.json")}


def _no_training(*args, **kwargs):
    raise AssertionError("the sweep trained a run again")


@pytest.mark.slow  # eight real 1-step runs, two of them trained twice, and their evaluation
def test_runs_are_distinct_reused_and_only_a_missing_one_is_retrained(tmp_path, monkeypatch):
    import eiclip_core.train.loop

    # smoke data, one optimiser step per run: the cheapest real sweep with 2 data seeds x 2 training seeds
    profile = get_profile("smoke", sweep_products=(32, 16), sweep_epochs=1, batch_size=32, confounding_sweep=(1.0,),
                          sweep_data_seeds=(0, 1), sweep_seeds=(0, 1))
    assert sweep.sweep_steps(profile) == 1
    first = sweep.run_sweep(profile, tmp_path)
    folder = sweep.sweep_dir(profile, tmp_path)
    assert json.loads((folder / "settings.json").read_text()) == sweep.point_settings(profile, "cpu")
    recalls = first.recalls
    assert len(recalls) == 2 * (1 + 2 * 2) and recalls["mean"].between(0, 100).all()
    checkpoints = {json.loads(p.read_text())["identity"]["checkpoint"] for p in folder.glob("*/results/*-seed*.json")}
    assert len(checkpoints) == 8  # every (data seed, row, training seed) is its own run
    assert set(first.breakdown["status"]) <= {"prone", "not prone"} and len(first.breakdown)
    done = _done_times(folder)
    assert len(done) == 8 and not list(folder.glob("*/runs/*/*/checkpoints"))

    real_train = eiclip_core.train.loop.train
    monkeypatch.setattr(eiclip_core.train.loop, "train", _no_training)
    again = sweep.run_sweep(profile, tmp_path)  # every run finished: read back, nothing trained
    pd.testing.assert_frame_equal(again.recalls, recalls)
    assert _done_times(folder) == done

    monkeypatch.setattr(eiclip_core.train.loop, "train", real_train)
    import shutil

    shutil.rmtree(folder / "conf1-data1" / "runs" / "ei-clip" / "seed0")  # a point missing
    (folder / "conf1-data0" / "runs" / "clip-ft" / "seed1" / "done.json").unlink()  # a run killed before its end
    resumed = sweep.run_sweep(profile, tmp_path)
    now = _done_times(folder)
    retrained = {k for k in now if now[k] != done.get(k)}
    assert retrained == {"conf1-data1/runs/ei-clip/seed0", "conf1-data0/runs/clip-ft/seed1"}
    assert len(resumed.recalls) == len(recalls)

    monkeypatch.setattr(eiclip_core.train.loop, "train", _no_training)
    changed = get_profile("smoke", sweep_products=(32, 16), sweep_epochs=1, batch_size=32, confounding_sweep=(1.0,),
                          lr=2e-4)
    assert sweep.sweep_dir(changed, tmp_path) != folder  # other settings: a folder of their own, never reused
    with pytest.raises(AssertionError, match="trained a run again"):
        sweep.run_sweep(changed, tmp_path)
