"""`eiclip reproduce`: notebooks 01 to 05 in order with papermill, into reports/<profile>/.

    eiclip reproduce --profile quick                 # what `make reproduce` runs
    eiclip reproduce --profile smoke --from 03       # re-run from notebook 03 on
    eiclip reproduce --profile quick --seed 7        # another draw of data and seeds, own report folder
    eiclip reproduce --profile paper --dry-run       # the paper path on a small generated 256 px file

The profile (eiclip_core/pipeline/profiles.py) says what to run; each notebook gets the parameters it
declares in its `parameters` cell. A notebook that fails stops the pipeline with its name, the
failing cell and the error; the reports folder is then restored to what it was before that notebook,
so the reports of the notebooks before it are kept and nothing is half-overwritten.
"""
import ast
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

from eiclip_core import layout
from eiclip_core.model.config import fits_type
from eiclip_core.errors import KitError
from eiclip_core.io import write_json, writable_dir
from eiclip_core.pipeline.profiles import PROFILES, Profile, get_profile
from eiclip_core.runtime import PROJECT_ROOT, environment_versions, git_revision, resolve_device

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_data_exploration", "02_entity_mining", "03_training", "04_evaluation",
             "05_confounder_visualisation")
KERNEL = "python3"


def default_dirs(profile: Profile, seed=None, confounding=None) -> tuple[Path, Path]:
    """data/<name>, reports/<name>; a seed or confounding override gets folders of its own."""
    if profile.real_data:
        return Path("data/fashiongen"), Path("reports") / profile.name
    suffix = "".join([f"-seed{seed}" if seed is not None else "",
                      f"-conf{confounding:g}" if confounding is not None else ""])
    return Path("data") / f"{profile.name}{suffix}", Path("reports") / f"{profile.name}{suffix}"


def prepare_data(profile: Profile, data_dir: Path) -> None:
    """Check the real or imported files, or generate the profile's data set unless already there."""
    if profile.real_data or not profile.n_train_products:  # no generated sizes: the files are given
        from eiclip_core.data.check import check_file

        problems = [p for split in layout.SPLITS for p in check_file(layout.split_file(data_dir, split))]
        if problems:
            raise KitError(f"{data_dir}: the Fashion-Gen files failed `eiclip check-data`: {problems[0]}"
                           + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        return
    from eiclip_core.synth import generate_unless_present

    made = generate_unless_present(data_dir, profile.name, profile.data_seed, profile.confounding,
                                   profile.image_size, profile.n_train_products, profile.n_val_products)
    print(f"data: {'generated' if made else 'reusing'} {data_dir} ({profile.name}, seed {profile.data_seed}, "
          f"confounding {profile.confounding:g})")


def notebook_parameters(notebook: Path, values: dict) -> dict:
    """The subset of `values` that `notebook` declares, each checked against the type of its default."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise KitError(f"{_shown(notebook)}: no cell tagged 'parameters'")
    chosen = {}
    for name, spec in declared.items():
        if name not in values:
            continue
        expected = _default_type(spec["default"])
        value = values[name]
        if expected is not None and not fits_type(value, expected):
            raise KitError(f"{_shown(notebook)}: parameter {name!r} expects {expected.__name__}, got "
                           f"{type(value).__name__} {value!r}")
        chosen[name] = value
    return chosen


def _default_type(default: str):
    """The type of a parameter's default value (None when the default is None or not a literal)."""
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return None
    return None if value is None else type(value)


def run_notebook(source: Path, parameters: dict, reports_dir: Path) -> float:
    """Execute one notebook into reports_dir/<its name>; on failure restore reports_dir and raise."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = source.stem
    output = reports_dir / f"{name}.ipynb"
    running = reports_dir / f".{name}.running.ipynb"
    snapshot = reports_dir.parent / f".{reports_dir.name}.before-{name}"
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(reports_dir, snapshot)
    start = time.perf_counter()
    try:
        # shutdown_kernel="immediate": once the last cell has returned, every file the notebook writes is
        # written (atomically, in its cells); a graceful shutdown only waits seconds for the interpreter to
        # tear down torch and open_clip's modules, in each of the five kernels.
        with _kernel_without_progress_bars():
            papermill.execute_notebook(
                str(source), str(running), parameters=parameters, kernel_name=KERNEL, cwd=str(PROJECT_ROOT),
                progress_bar=sys.stderr.isatty(), stdout_file=sys.stdout, stderr_file=sys.stderr,
                shutdown_kernel="immediate")
        _record_paths_relative(running, source, output)
        running.replace(output)
    except PapermillExecutionError as e:
        _restore(reports_dir, snapshot)
        cell = e.cell_index - (1 if parameters else 0)  # papermill inserts one cell of injected parameters
        first_line = (e.source or "").strip().splitlines()[0] if (e.source or "").strip() else ""
        raise KitError(f"{_shown(source)}: cell {cell} (`{first_line[:60]}`) failed: {e.ename}: {e.evalue}") from None
    except BaseException:
        _restore(reports_dir, snapshot)
        raise
    shutil.rmtree(snapshot, ignore_errors=True)
    return time.perf_counter() - start


@contextlib.contextmanager
def _kernel_without_progress_bars():
    """The kernel inherits TQDM_DISABLE=1: a report holds results, not hundreds of progress-bar outputs.
    This process's own bars are unaffected (tqdm reads its environment once, when imported), so a person
    at a terminal still sees papermill's bar over the cells."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = before


def _record_paths_relative(executed: Path, source: Path, output: Path) -> None:
    """papermill records absolute input and output paths; keep machine paths out of the reports."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata.papermill.update(input_path=_shown(source), output_path=_shown(output))
    nbformat.write(nb, executed)


def _restore(reports_dir: Path, snapshot: Path) -> None:
    shutil.rmtree(reports_dir, ignore_errors=True)
    snapshot.rename(reports_dir)


def reproduce(profile_name: str, data_dir=None, reports_dir=None, seed=None, confounding=None,
              device: str = "auto", start: str = "01", dry_run: bool = False) -> Path:
    """Run the pipeline; return the reports folder. Paths are relative to the project root."""
    if dry_run:
        if profile_name != "paper":
            raise KitError(f"--dry-run: only the paper profile has a dry run (got {profile_name!r})")
        profile_name = "paper-dry-run"
    profile = get_profile(profile_name, seed=seed, confounding=confounding)
    default_data, default_reports = default_dirs(profile, seed, confounding)
    data_dir = _project_path(data_dir) if data_dir else default_data
    reports_dir = _project_path(reports_dir) if reports_dir else default_reports
    todo = [nb for nb in NOTEBOOKS if nb[:2] >= start[:2]]
    if not todo:
        raise KitError(f"--from {start}: no such notebook (choose from {', '.join(n[:2] for n in NOTEBOOKS)})")
    torch_device = resolve_device(device)
    writable_dir(PROJECT_ROOT / reports_dir)  # before minutes of data generation, not after
    prepare_data(profile, PROJECT_ROOT / data_dir)

    values = {"profile": profile.name, "data_dir": str(data_dir), "reports_dir": str(reports_dir),
              "seed": profile.seeds[0], "device": device}
    manifest_path = PROJECT_ROOT / reports_dir / "manifest.json"
    manifest = {"profile": dataclasses.asdict(profile),
                "arguments": {"profile": profile_name, "seed": seed, "confounding": confounding,
                              "device": device, "from": start, "dry_run": dry_run},
                "notebook_parameters": values, "device": str(torch_device),
                "git_revision": git_revision(), "versions": environment_versions(), "notebooks": {}}
    if manifest_path.exists() and start[:2] != "01":
        manifest["notebooks"] = json.loads(manifest_path.read_text()).get("notebooks", {})
    for i, name in enumerate(todo, 1):
        print(f"\n=== [{i}/{len(todo)}] {name} ({profile.name}) ===", flush=True)
        source = NOTEBOOK_DIR / f"{name}.ipynb"
        seconds = run_notebook(source, notebook_parameters(source, values), PROJECT_ROOT / reports_dir)
        manifest["notebooks"][name] = {"seconds": round(seconds, 1)}
        manifest["runs"] = _run_configs(PROJECT_ROOT / data_dir)
        write_json(manifest_path, manifest)
        print(f"=== {name}: done in {seconds:.0f} s", flush=True)
    total = sum(manifest["notebooks"][name]["seconds"] for name in todo)
    print(f"\nreports in {reports_dir}/ ({len(todo)} notebooks, {total:.0f} s)")
    return reports_dir


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _project_path(path) -> Path:
    """A user's path (relative to their working folder) as the notebooks see it: relative to the
    project root when inside it, so executed notebooks carry no machine paths; absolute otherwise."""
    path = (Path.cwd() / path).resolve()
    return path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path


def _run_configs(data_dir: Path) -> dict:
    """The config of every training run under the data folder, by run path, as the manifest records it:
    the training file's resolved path (the run's identity on this machine) relative to the project."""
    runs = {}
    for config in sorted((data_dir / "runs").glob("**/config.json")):
        record = json.loads(config.read_text())
        if "train_identity" in record:
            record["train_identity"]["path"] = str(_project_path(record["train_identity"]["path"]))
        runs[str(config.parent.relative_to(data_dir))] = record
    return runs


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default="quick", choices=[p for p in PROFILES if p != "paper-dry-run"])
    parser.add_argument("--data-dir", help="data folder (default: data/<profile>, or data/fashiongen for paper)")
    parser.add_argument("--reports", help="reports folder (default: reports/<profile>)")
    parser.add_argument("--seed", type=int, help="move every seed of the profile (data and training)")
    parser.add_argument("--confounding", type=float, help="the generator's confounding knob in [0, 1]")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--from", dest="start", default="01", help="first notebook to run (01 to 05)")
    parser.add_argument("--dry-run", action="store_true", help="paper profile: 2 steps on generated 256 px data")


def run(args) -> int:
    if args.confounding is not None and not 0.0 <= args.confounding <= 1.0:
        raise KitError(f"--confounding {args.confounding}: must be within [0, 1]")
    reproduce(args.profile, args.data_dir, args.reports, args.seed, args.confounding, args.device,
              args.start, args.dry_run)
    return 0
