"""The smoke pipeline's numbers, pinned with tolerances (the recommenders way), not as text.

Compares what the five smoke notebooks record (results.json, confounding.json, readings.json) with the
committed references in reports/smoke/. nbval compares the rendered outputs with digits past the first
decimal masked (tests/nbval_sanitize.cfg); this test says which *number* moved and by how much.

`make test-notebooks` runs it right after nbval has executed the notebooks, on the files that execution
wrote (EICLIP_SMOKE_RUN) against the committed copy it set aside (EICLIP_SMOKE_REFERENCE), so the
pipeline runs once. Run alone (`pytest -m notebooks tests/test_smoke_numbers.py`), it runs the smoke
pipeline itself with papermill into a temporary folder (about five minutes on 2 cores).
"""
import json
import os
from pathlib import Path

import pytest

from test_readings import check_readings_file, number_differences

COMMITTED = Path(__file__).resolve().parents[1] / "reports" / "smoke"
METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean")
TOLERANCE = 0.05  # points of recall (or of a reading's number): far above float noise, far below an effect

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Path:
    """The reports folder of a fresh smoke run: nbval's (make test-notebooks) or one made here."""
    if os.environ.get("EICLIP_SMOKE_RUN"):
        return Path(os.environ["EICLIP_SMOKE_RUN"])
    from eiclip_core.pipeline.reproduce import reproduce

    tmp = tmp_path_factory.mktemp("smoke-run")
    return reproduce("smoke", data_dir=tmp / "data", reports_dir=tmp / "reports")


@pytest.fixture(scope="module")
def reference() -> Path:
    return Path(os.environ.get("EICLIP_SMOKE_REFERENCE", COMMITTED))


def read(folder: Path, name: str):
    return json.loads((folder / name).read_text(encoding="utf-8"))


def records(results: dict) -> dict:
    return {(r["row"], r["protocol"], r["seed"]): [r[k] for k in METRICS] for r in results["records"]}


def test_every_recall_matches_the_committed_run(executed, reference):
    got, want = records(read(executed, "results.json")), records(read(reference, "results.json"))
    assert got.keys() == want.keys()
    moved = {key: (got[key], values) for key, values in want.items()
             if got[key] != pytest.approx(values, abs=TOLERANCE)}
    assert not moved, moved


def test_confounding_measures_match_the_committed_run(executed, reference):
    got, want = read(executed, "confounding.json"), read(reference, "confounding.json")
    assert not number_differences(got, want, TOLERANCE, "confounding.json")
    assert read(executed, "results.json")["confounding"] == got  # results.json carries the same record


def test_notebook_05_readings_are_whole_and_match_the_committed_run(executed, reference):
    got = check_readings_file(executed / "readings.json")  # each sentence is the one its numbers give
    numbers = lambda record: {name: section["numbers"] for name, section in record.items()}
    assert not number_differences(numbers(got), numbers(read(reference, "readings.json")), TOLERANCE, "readings")
