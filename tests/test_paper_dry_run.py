"""The paper profile's code path (ViT-B-32, 256-pixel images, all five notebooks) on this machine:
`eiclip reproduce --profile paper --dry-run` on a small generated file, 2 steps of a random-init ViT-B-32."""
import json

import pytest

from eiclip_core.cli import main
from eiclip_core.pipeline.reproduce import NOTEBOOKS


@pytest.mark.slow
def test_paper_dry_run_runs_every_notebook(tmp_path):
    data_dir, reports = tmp_path / "data", tmp_path / "reports"
    assert main(["reproduce", "--profile", "paper", "--dry-run", "--data-dir", str(data_dir),
                 "--reports", str(reports)]) == 0
    for name in NOTEBOOKS:
        assert (reports / f"{name}.ipynb").exists(), name
    manifest = json.loads((reports / "manifest.json").read_text())
    assert manifest["profile"]["train"]["backbone"] == "ViT-B-32" and manifest["profile"]["image_size"] == 256
    assert set(manifest["notebooks"]) == set(NOTEBOOKS)
    configs = list(manifest["runs"].values())
    assert configs and all(c["config"]["backbone"] == "ViT-B-32" for c in configs)
    results = json.loads((reports / "results.json").read_text())
    assert {r["protocol"] for r in results["records"]} >= {"full", "sample-100"}
