"""The smoke pipeline's numbers, pinned with tolerances (the recommenders way), not as text.

Runs the five notebooks with papermill on freshly generated smoke data and compares what they record
(results.json, confounding.json, readings.json) with the committed references in reports/smoke/.
nbval (make test-notebooks) compares the rendered outputs; this test says which *number* moved and
by how much, and tolerates last-digit noise that a text comparison cannot.
"""
import json
from pathlib import Path

import pytest

from test_readings import check_readings_file, number_differences

REFERENCE = Path(__file__).resolve().parents[1] / "reports" / "smoke"
METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean")
TOLERANCE = 0.05  # points of recall (or of a reading's number): far above float noise, far below an effect


def _records(results: dict) -> dict:
    return {(r["row"], r["protocol"], r["seed"]): [r[k] for k in METRICS] for r in results["records"]}


@pytest.mark.slow
def test_smoke_pipeline_reproduces_the_committed_numbers(tmp_path):
    from eiclip_core.pipeline import reproduce

    reports = reproduce("smoke", data_dir=tmp_path / "data", reports_dir=tmp_path / "reports")
    got, want = (json.loads((d / "results.json").read_text()) for d in (reports, REFERENCE))
    assert _records(got).keys() == _records(want).keys()
    for key, values in _records(want).items():
        assert _records(got)[key] == pytest.approx(values, abs=TOLERANCE), key
    assert not number_differences(got["confounding"], want["confounding"], TOLERANCE, "confounding")
    check_readings_file(reports / "readings.json")
    assert not number_differences(json.loads((reports / "readings.json").read_text()),
                                  json.loads((REFERENCE / "readings.json").read_text()), TOLERANCE, "readings")
