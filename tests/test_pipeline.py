"""The papermill pipeline: parameters are checked, a failing notebook is named and leaves reports intact."""
import dataclasses
import json
import os
import shutil

import nbformat
import pytest

from eiclip_core.pipeline import reproduce
from eiclip_core.cli import main
from eiclip_core.errors import KitError
from eiclip_core.io import folder_lock
from eiclip_core.pipeline.profiles import get_profile


def _notebook(path, cells, params="x = 1\nname = 'a'"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_parameters_are_filtered_and_type_checked(tmp_path):
    nb = _notebook(tmp_path / "01_demo.ipynb", ["print(x)"])
    assert reproduce.notebook_parameters(nb, {"x": 3, "name": "b", "other": 1.0}) == {"x": 3, "name": "b"}
    with pytest.raises(KitError, match=r"01_demo.ipynb: parameter 'x' expects int, got str"):
        reproduce.notebook_parameters(nb, {"x": "3"})
    with pytest.raises(KitError, match="expects int, got bool"):
        reproduce.notebook_parameters(nb, {"x": True})


def test_notebook_without_parameters_cell_is_named(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, tmp_path / "02_bare.ipynb")
    with pytest.raises(KitError, match="02_bare.ipynb: no cell tagged 'parameters'"):
        reproduce.notebook_parameters(tmp_path / "02_bare.ipynb", {})


def test_failing_notebook_is_named_and_reports_are_restored(tmp_path, monkeypatch):
    """A failed notebook's outputs never reach the reports folder, which is never copied nor replaced: a
    file written there meanwhile (here by the notebook itself, past its reports_dir) stays."""
    _no_copies(monkeypatch)
    reports = tmp_path / "reports"
    (reports / "figures").mkdir(parents=True)
    (reports / "results.json").write_text('{"old": true}')
    (reports / "figures" / "old.png").write_bytes(b"png")
    source = _notebook(tmp_path / "03_fails.ipynb", [
        "from eiclip_core.io import write_text\nwrite_text(f'{reports_dir}/results.json', 'half')\n"
        "open(f'{reports_dir}/figures/new.png', 'w').write('x')\nopen('reports/meanwhile.txt', 'w').write('kept')",
        "raise ValueError(f'broken at {x}')",
    ], params=REPORTS_PARAMS)
    with pytest.raises(KitError) as err:
        _run_in(tmp_path, source, reports)
    message = str(err.value)
    assert "03_fails.ipynb" in message and "cell 2" in message and "ValueError: broken at 7" in message
    assert json.loads((reports / "results.json").read_text()) == {"old": True}
    assert sorted(p.name for p in (reports / "figures").iterdir()) == ["old.png"]
    assert sorted(p.name for p in reports.iterdir()) == [".lock", "figures", "meanwhile.txt", "results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["03_fails.ipynb", "reports"]  # nothing beside it


REPORTS_PARAMS = "x = 1\nreports_dir = 'reports/smoke'"


def _no_copies(monkeypatch):
    """Copying a file or a folder fails: reports are staged with hard links and renamed, never copied."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"copied {args[0]}")

    for name in ("copytree", "copy2", "copyfile", "copy"):
        monkeypatch.setattr(shutil, name, refuse)


def _run_in(folder, source, reports):
    """run_notebook with the kernel's working folder (normally the project root) set to `folder`, the reports
    folder locked as `reproduce` locks it, and reports_dir passed as the notebook sees it (relative)."""
    with pytest.MonkeyPatch.context() as mp, folder_lock(reports, "reports folder"):
        mp.setattr(reproduce, "PROJECT_ROOT", folder)
        reproduce.run_notebook(source, {"x": 7, "reports_dir": str(reports.relative_to(folder))}, reports)


def test_successful_notebook_lands_in_reports(tmp_path, monkeypatch):
    """The notebook writes into a staging folder; its outputs are renamed into the reports folder, and the
    executed notebook reads as if run in place (parameters and printed paths name the reports folder)."""
    _no_copies(monkeypatch)
    reports = tmp_path / "reports"
    (reports / reproduce.STAGING / "figures").mkdir(parents=True)  # a killed run's staging: dropped
    (reports / reproduce.STAGING / "figures" / "stale.png").write_text("stale")
    (reports / "confounding.json").write_text('{"harm": 1}')
    (reports / "figures").mkdir()
    (reports / "figures" / "01_a.png").write_text("old figure")
    before = (reports / "confounding.json").stat().st_ino
    source = _notebook(tmp_path / "01_ok.ipynb", [
        "print(x * 2)",
        "import json\nfrom eiclip_core.io import write_text\nfrom pathlib import Path\n"
        "write_text(f'{reports_dir}/figures/01_a.png', 'new figure')\n"
        "write_text(f'{reports_dir}/results.json', json.dumps(json.loads(Path(reports_dir, 'confounding.json')"
        ".read_text())))\nprint(f'written to {reports_dir}/results.json')",
    ], params=REPORTS_PARAMS)
    _run_in(tmp_path, source, reports)
    executed = nbformat.read(reports / "01_ok.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("text") == "14\n" for o in outputs)
    assert any(o.get("text") == "written to reports/results.json\n" for o in outputs)
    assert "x = 7" in executed.cells[1].source and 'reports_dir = "reports"' in executed.cells[1].source
    meta = executed.metadata.papermill  # no machine paths in a committed report
    assert (meta.input_path, meta.output_path) == ("01_ok.ipynb", "reports/01_ok.ipynb")
    assert meta.parameters == {"x": 7, "reports_dir": "reports"}
    assert json.loads((reports / "results.json").read_text()) == {"harm": 1}  # read the report before it
    assert (reports / "figures" / "01_a.png").read_text() == "new figure"
    assert (reports / "confounding.json").stat().st_ino == before  # untouched: neither copied nor moved
    assert sorted(p.name for p in reports.iterdir()) == [".lock", "01_ok.ipynb", "confounding.json", "figures",
                                                         "results.json"]
    assert sorted(p.name for p in (reports / "figures").iterdir()) == ["01_a.png"]


def test_an_interrupted_notebook_leaves_the_reports_as_they_were(tmp_path, monkeypatch):
    """Ctrl-C while a notebook runs (papermill raising KeyboardInterrupt after writing into its reports_dir):
    its outputs are dropped with the staging folder and the interrupt goes on to the command line."""
    import papermill

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "results.json").write_text("old")

    def interrupted(source, output, parameters, **kwargs):
        staged = tmp_path / parameters["reports_dir"]
        (staged / "results.json").unlink()
        (staged / "results.json").write_text("half")
        (staged / "figures").mkdir()
        (staged / "figures" / "05_a.png").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run_in(tmp_path, _notebook(tmp_path / "05_x.ipynb", ["pass"], params=REPORTS_PARAMS), reports)
    assert sorted(p.name for p in reports.iterdir()) == [".lock", "results.json"]
    assert (reports / "results.json").read_text() == "old"


def test_the_kernel_runs_without_progress_bars_and_this_process_keeps_its_environment(tmp_path, monkeypatch):
    """An executed report holds results, not progress bars: the kernel sees TQDM_DISABLE=1, and the
    caller's environment is as it was afterwards."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    reports = tmp_path / "reports"
    reports.mkdir()
    source = _notebook(tmp_path / "01_bars.ipynb", [
        "import os\nimport eiclip_core\nfrom tqdm.auto import tqdm\nprint(os.environ.get('TQDM_DISABLE'))\n"
        "list(tqdm(range(3)))"])
    _run_in(tmp_path, source, reports)
    executed = nbformat.read(reports / "01_bars.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("text") == "1\n" for o in outputs)
    assert not any(o.get("name") == "stderr" or "application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for o in outputs)
    assert "TQDM_DISABLE" not in os.environ


def test_seed_override_moves_every_seed_and_gets_its_own_folders():
    profile = get_profile("quick", seed=7)
    assert profile.data_seed == 7 and profile.seeds == (7, 8) and profile.harm_data_seeds == (7, 8, 9)
    science = get_profile("science", seed=7)
    assert science.sweep_data_seeds == (7, 8) and science.sweep_seeds == (7, 8, 9)
    data_dir, reports_dir = reproduce.default_dirs(profile, seed=7)
    assert str(data_dir) == "data/quick-seed7" and str(reports_dir) == "reports/quick-seed7"


RECIPES = {  # what each profile's runs are trained with (the rest of TrainConfig at its defaults)
    "smoke": dict(epochs=1, max_steps=4, batch_size=32, lr=1e-4, warmup_steps=1, eval_every=2),
    "quick": dict(epochs=1, batch_size=64, lr=1e-4, warmup_steps=10, eval_every=16),
    "science": dict(epochs=2, batch_size=64, lr=1e-4, warmup_steps=10, eval_every=23),
    "ablation": dict(epochs=2, batch_size=64, lr=1e-4, warmup_steps=10),
    "paper": dict(backbone="ViT-B-32", pretrained="openai", epochs=10, batch_size=64, lr=5e-5, warmup_steps=100),
    "catalog": dict(epochs=2, batch_size=64, lr=1e-4, warmup_steps=10),
    "paper-dry-run": dict(backbone="ViT-B-32", pretrained="random", epochs=1, max_steps=2, batch_size=8, lr=5e-5,
                          warmup_steps=1),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_run_config_is_the_profile_recipe_on_the_data_layout(name, tmp_path):
    from eiclip_core import layout
    from eiclip_core.model.config import TrainConfig
    from eiclip_core.pipeline.profiles import PROFILES, profile_config

    for split in ("train", "validation"):
        (tmp_path / f"{split}.h5").touch()
    profile = get_profile(name, seed=3)
    seed = profile.seeds[-1]
    cfg = profile_config(profile, tmp_path, "cesm", seed, "cpu").to_dict()
    run = {"train": str(tmp_path / "train.h5"), "val": str(tmp_path / "validation.h5"),
           "entities": str(layout.entities_file(tmp_path)), "out": str(layout.run_dir(tmp_path, "cesm", seed)),
           "row": "cesm", "seed": seed, "device": "cpu"}
    assert cfg == {**TrainConfig().to_dict(), "new_module_lr_scale": 100.0, "backbone": "eiclip-tiny",
                   "pretrained": "", "max_steps": 0, "eval_every": 0, **RECIPES[name], **run}
    assert profile.train == PROFILES[name].train and profile.train is not PROFILES[name].train
    assert profile.rows == (("clip-ft", "intervention-all", "cesm", "ealm-only", "ei-clip") if name == "ablation"
                            else ("clip-ft", "ei-clip"))
    manifest = json.loads(json.dumps(dataclasses.asdict(profile)))  # as reproduce's manifest.json records it
    assert manifest["train"]["batch_size"] == RECIPES[name]["batch_size"] and manifest["name"] == name


def test_recipe_overrides_change_a_copy_of_the_profile_train_config():
    from eiclip_core.pipeline.profiles import PROFILES

    catalog = get_profile("catalog", max_steps=2, batch_size=8, warmup_steps=1, lr=None)
    assert (catalog.train.max_steps, catalog.train.batch_size, catalog.train.warmup_steps) == (2, 8, 1)
    assert catalog.train.lr == 1e-4 and PROFILES["catalog"].train.batch_size == 64
    catalog.train.model["prompt"] = "typed"  # a caller's copy: the profile table is unchanged
    assert PROFILES["catalog"].train.model == {} and get_profile("catalog").train.model == {}
    with pytest.raises(KitError, match="profile 'smoke': unknown setting\\(s\\) out, steps"):
        get_profile("smoke", steps=3, out="x")  # per-run fields are not a profile's to set
    with pytest.raises(KitError, match="train config: batch_size=1 out of range"):
        get_profile("smoke", batch_size=1)


def test_a_sweep_run_is_the_recipe_at_the_sweep_length_without_validation():
    from eiclip_core.analysis.sweep import point_settings, train_config

    smoke = get_profile("smoke")
    cfg = train_config(smoke, None, "clip-ft", 0, "cpu")
    assert (cfg.epochs, cfg.max_steps, cfg.warmup_steps, cfg.eval_every) == (1, 1, 0, 0)  # ceil(32 / 32) x 1 step
    assert (cfg.batch_size, cfg.lr, cfg.val) == (32, 1e-4, "")
    science = train_config(get_profile("science"), None, "ei-clip", 2, "cpu")
    assert (science.epochs, science.max_steps, science.warmup_steps, science.eval_every) == (2, 94, 10, 0)
    assert point_settings(smoke, "cpu")["train"]["max_steps"] == 1


@pytest.mark.parametrize("argv, problem", [
    (["reproduce", "--profile", "quick", "--confounding", "1.5"], "--confounding 1.5: must be within [0, 1]"),
    (["reproduce", "--profile", "smoke", "--dry-run"], "only the paper profile has a dry run"),
    (["reproduce", "--profile", "smoke", "--from", "09"], "--from 09: no such notebook"),
    (["reproduce", "--profile", "smoke", "--seed", "-1"], "--seed -1: must be 0 or more"),
    (["reproduce", "--profile", "smoke", "--device", "tpu"], "--device 'tpu': unknown device (use auto, cpu, cuda"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, problem, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1 and err.startswith("error: ")


def test_missing_real_data_is_a_clear_error(tmp_path, capsys):
    assert main(["reproduce", "--profile", "paper", "--data-dir", str(tmp_path)]) == 2
    assert "no train file" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["reports is a file", "read-only reports", "data under a file"])
def test_unwritable_reports_or_data_folder_is_one_line_exit_2(case, tmp_path, read_only, capsys):
    """Checked before any data is generated or notebook run. Read-only: the `read_only` fixture
    (monkeypatch; tests run as root, where chmod does not stop writes)."""
    a_file, ro = tmp_path / "a_file", tmp_path / "ro"
    a_file.write_text("not a folder")
    ro.mkdir()
    read_only(ro)
    reports, data, problem = {
        "reports is a file": (a_file, tmp_path / "data", f"{a_file}: cannot write here: exists and is not a folder"),
        "read-only reports": (ro / "reports", tmp_path / "data", f"{ro}/reports: cannot write here: read-only"),
        "data under a file": (tmp_path / "reports", a_file / "data",
                              f"{a_file}/data: cannot write here: a part of this path is a file, not a folder"),
    }[case]
    assert main(["reproduce", "--profile", "smoke", "--reports", str(reports), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem}") and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists() and not list(ro.iterdir())


@pytest.mark.parametrize("reports, relation", [
    (".", "is the project folder or holds it"),
    ("..", "is the project folder or holds it"),
    ("data", "holds the data folder data/smoke"),
    ("data/smoke", "is the data folder data/smoke"),
    ("data/smoke/reports", "lies inside the data folder data/smoke"),
    ("notebooks", "is a source folder notebooks"),
    ("eiclip_core/figures", "lies inside a source folder eiclip_core"),
    ("reports/../tests", "is a source folder tests"),
])
def test_a_reports_folder_that_is_not_its_own_is_refused(reports, relation, capsys, monkeypatch):
    """Reports are renamed into the reports folder: the project, a data folder or a source folder (or
    one holding or inside them) is refused in one line before anything is written or generated."""
    from eiclip_core.runtime import PROJECT_ROOT

    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setattr(reproduce, "prepare_data", lambda *a: pytest.fail("data prepared"))
    assert main(["reproduce", "--profile", "smoke", "--reports", reports]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --reports ") and f": {relation}; reports need a folder of their own" in err, err
    assert err.count("\n") == 1
    assert not (PROJECT_ROOT / "data" / "smoke" / "reports").exists()


def test_a_reports_folder_outside_the_project_holding_the_data_is_refused(tmp_path, capsys):
    assert main(["reproduce", "--profile", "smoke", "--reports", str(tmp_path),
                 "--data-dir", str(tmp_path / "data")]) == 2
    assert f"--reports {tmp_path}: holds the data folder {tmp_path / 'data'};" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_second_reproduce_into_a_locked_reports_folder_stops_in_one_line(tmp_path, capsys, monkeypatch):
    """Two runs into one reports folder would mix their results: the second stops before any work."""
    monkeypatch.setattr(reproduce, "prepare_data", lambda *a: pytest.fail("data prepared"))
    reports = tmp_path / "reports"
    with folder_lock(reports, "reports folder"):  # this test process is the first run
        assert main(["reproduce", "--profile", "smoke", "--reports", str(reports),
                     "--data-dir", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err == (f"error: {reports}: reports folder is in use by another process "
                                       f"(pid {os.getpid()})\n")


SLOW_NOTEBOOK = ("import os, time\nfrom eiclip_core.io import write_text\n"
                 "write_text(f'{reports_dir}/figures/05_a.png', 'half of the figures')\n"
                 "write_text('started', str(os.getpid()))\ntime.sleep(120)")
RUN_ONE_NOTEBOOK = """
import sys
from pathlib import Path
from eiclip_core.cli import main
from eiclip_core.pipeline import reproduce

reproduce.PROJECT_ROOT = reproduce.NOTEBOOK_DIR = Path.cwd()
reproduce.NOTEBOOKS = ("05_slow",)
reproduce.prepare_data = lambda *args: None
sys.exit(main(["reproduce", "--profile", "smoke", "--reports", "reports", "--data-dir", "data"]))
"""


@pytest.mark.slow  # a kernel started in a process of its own
def test_sigterm_during_reproduce_is_handled_like_ctrl_c(tmp_path):
    """`timeout`, `kill` and schedulers send SIGTERM: the notebook's kernel is shut down, its outputs are
    dropped, nothing is left behind, and the command exits 130 as on Ctrl-C."""
    import signal
    import subprocess
    import sys
    import time
    from eiclip_core.runtime import PROJECT_ROOT

    _notebook(tmp_path / "05_slow.ipynb", [SLOW_NOTEBOOK], params=REPORTS_PARAMS)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "results.json").write_text("old")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", RUN_ONE_NOTEBOOK], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "started").exists(), proc.communicate(timeout=5)
    kernel = int((tmp_path / "started").read_text())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.splitlines()[-1] == "error: interrupted", err[-2000:]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [".lock", "results.json"]
    assert (tmp_path / "reports" / "results.json").read_text() == "old"
    with pytest.raises(ProcessLookupError):  # the kernel is gone with the command
        os.kill(kernel, 0)
