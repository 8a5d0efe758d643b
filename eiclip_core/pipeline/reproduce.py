"""`eiclip reproduce`: notebooks 01 to 05 in order with papermill, into reports/<profile>/.

    eiclip reproduce --profile quick                 # what `make reproduce` runs
    eiclip reproduce --profile smoke --from 03       # re-run from notebook 03 on
    eiclip reproduce --profile quick --seed 7        # another draw of data and seeds, own report folder
    eiclip reproduce --profile paper --dry-run       # the paper path on a small generated 256 px file

The profile (eiclip_core/pipeline/profiles.py) says what to run; each notebook gets the parameters it
declares in its `parameters` cell. A notebook that fails stops the pipeline with its name, the
failing cell and the error.

A notebook writes its outputs into a staging folder inside the reports folder (STAGING, seeded with
hard links to the reports before it, which it may read); only when its last cell has run are they
renamed into the reports folder, so a failed, interrupted (Ctrl-C, or SIGTERM, handled alike) or
killed notebook leaves the reports as they were, and the folder is never copied nor replaced. The
executed notebook records the reports folder, not the staging one: a successful run writes what it
would write into the folder directly. The reports folder is locked while `reproduce` writes it
(io.folder_lock), and it must be a folder of its own (check_reports_folder).
"""
import ast
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from eiclip_core import layout
from eiclip_core.model.config import fits_type
from eiclip_core.errors import KitError
from eiclip_core.io import folder_lock, signals_held, write_json, writable_dir
from eiclip_core.pipeline.profiles import PROFILES, Profile, get_profile
from eiclip_core.runtime import PROJECT_ROOT, environment_versions, git_revision, resolve_device

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_data_exploration", "02_entity_mining", "03_training", "04_evaluation",
             "05_confounder_visualisation")
KERNEL = "python3"
STAGING = ".reproduce-staging"  # in the reports folder: one notebook's outputs until it has run to the end
LOCK = ".lock"  # io.folder_lock's file, never staged
# folders of the project a reports folder must neither be, hold, nor lie inside (besides the data folders)
SOURCE_FOLDERS = ("eiclip_core", "notebooks", "tests", "docs", "bench", "experiments", ".git")


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
    """Execute one notebook with its outputs staged, then move them into reports_dir; on failure or
    interrupt drop them and raise. `parameters["reports_dir"]`, when the notebook takes it, is the reports
    folder as the notebook sees it; the notebook is given the staging folder's instead."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = source.stem
    staging = reports_dir / STAGING
    shown = parameters.get("reports_dir")
    staged = {**parameters, "reports_dir": f"{shown}/{STAGING}"} if shown is not None else parameters
    executed = staging / f"{name}.ipynb"
    start = time.perf_counter()
    try:
        _stage(reports_dir, staging)
        # shutdown_kernel="immediate": once the last cell has returned, every file the notebook writes is
        # written (atomically, in its cells); a graceful shutdown only waits seconds for the interpreter to
        # tear down torch and open_clip's modules, in each of the five kernels.
        with _kernel_without_progress_bars():
            papermill.execute_notebook(
                str(source), str(executed), parameters=staged, kernel_name=KERNEL, cwd=str(PROJECT_ROOT),
                progress_bar=sys.stderr.isatty(), stdout_file=sys.stdout, stderr_file=sys.stderr,
                shutdown_kernel="immediate")
        _record_paths_relative(executed, source, reports_dir / f"{name}.ipynb",
                               {staged["reports_dir"]: shown} if shown is not None else {})
        _move_in(staging, reports_dir)
    except PapermillExecutionError as e:
        cell = e.cell_index - (1 if parameters else 0)  # papermill inserts one cell of injected parameters
        first_line = (e.source or "").strip().splitlines()[0] if (e.source or "").strip() else ""
        raise KitError(f"{_shown(source)}: cell {cell} (`{first_line[:60]}`) failed: {e.ename}: {e.evalue}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - start


def _stage(reports_dir: Path, staging: Path) -> None:
    """`staging`, a fresh folder in reports_dir holding hard links to reports_dir's files (no byte is
    copied): the notebook reads the reports before it (notebook 04 reads notebook 01's confounding.json)
    and writes beside them. The kit writes reports by renaming a new file over the old one (io.atomic_path),
    so a staged link is replaced, never written through. A killed run's staging folder is dropped first."""
    shutil.rmtree(staging, ignore_errors=True)
    for folder, dirs, files in os.walk(reports_dir):
        folder = Path(folder)
        if folder == reports_dir:
            dirs[:] = [d for d in dirs if d != STAGING]
            files = [f for f in files if f != LOCK]
        (staging / folder.relative_to(reports_dir)).mkdir()
        for f in files:
            _link(folder / f, staging / folder.relative_to(reports_dir) / f)


def _link(source: Path, link: Path) -> None:
    try:
        os.link(source, link, follow_symlinks=False)
    except OSError:  # a file system without hard links: the file itself, once
        shutil.copy2(source, link, follow_symlinks=False)


def _move_in(staging: Path, reports_dir: Path) -> None:
    """Rename into reports_dir every file the notebook wrote or replaced in `staging` (one that is no
    longer the reports folder's own file), folders included. Ctrl-C and SIGTERM wait until all are in."""
    with signals_held():
        for folder, _, files in os.walk(staging):
            target = reports_dir / Path(folder).relative_to(staging)
            target.mkdir(exist_ok=True)
            for f in files:
                if not _same_file(Path(folder) / f, target / f):
                    os.replace(Path(folder) / f, target / f)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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


def _record_paths_relative(executed: Path, source: Path, output: Path, renamed: dict) -> None:
    """papermill records absolute input and output paths; keep machine paths out of the reports. Each
    `renamed` path (the staging folder) is written as the one it stands for (the reports folder), in the
    injected parameters and wherever a cell printed it: the report reads as if run in place."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata.papermill.update(input_path=_shown(source), output_path=_shown(output))
    nbformat.write(_renamed(nb, renamed), executed)


def _renamed(node, renamed: dict):
    """`node` (a notebook's JSON tree) with every `renamed` key replaced by its value in every string."""
    if isinstance(node, str):
        for old, new in renamed.items():
            node = node.replace(old, new)
        return node
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _renamed(value, renamed)
    elif isinstance(node, list):
        node[:] = [_renamed(value, renamed) for value in node]
    return node


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (sent by `timeout`, `kill`, schedulers) handled like Ctrl-C: a KeyboardInterrupt in the
    main thread, so the same cleanup runs (the notebook's kernel shut down, its staged outputs dropped)
    and the command exits with status 130. Only the main thread may set a signal handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def check_reports_folder(reports_dir: Path, data_dir: Path) -> None:
    """Refuse a reports folder that is not a folder of its own: the project folder (or one above it), a
    data folder or a source folder, or one that holds or lies inside them. Notebooks' outputs are renamed
    into it, so a reports folder shared with other files could overwrite them."""
    reports = (PROJECT_ROOT / reports_dir).resolve()
    if PROJECT_ROOT.resolve().is_relative_to(reports):
        raise KitError(f"--reports {reports_dir}: is the project folder or holds it; reports need a folder of "
                       "their own (default reports/<profile>)")
    others = [(data_dir, "the data folder"), (Path("data"), "the data folder")]
    for other, what in others + [(Path(name), "a source folder") for name in SOURCE_FOLDERS]:
        other = (PROJECT_ROOT / other).resolve()
        if reports == other or reports.is_relative_to(other) or other.is_relative_to(reports):
            relation = "is" if reports == other else "lies inside" if reports.is_relative_to(other) else "holds"
            raise KitError(f"--reports {reports_dir}: {relation} {what} {_shown(other)}; reports need a folder "
                           "of their own (default reports/<profile>)")


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
    check_reports_folder(reports_dir, data_dir)
    writable_dir(PROJECT_ROOT / reports_dir)  # before minutes of data generation, not after
    with folder_lock(PROJECT_ROOT / reports_dir, "reports folder"), _sigterm_as_interrupt():
        prepare_data(profile, PROJECT_ROOT / data_dir)
        values = {"profile": profile.name, "data_dir": str(data_dir), "reports_dir": str(reports_dir),
                  "seed": profile.seeds[0], "device": device}
        manifest = {"profile": dataclasses.asdict(profile),
                    "arguments": {"profile": profile_name, "seed": seed, "confounding": confounding,
                                  "device": device, "from": start, "dry_run": dry_run},
                    "notebook_parameters": values, "device": str(torch_device),
                    "git_revision": git_revision(), "versions": environment_versions(), "notebooks": {}}
        _run_notebooks(todo, profile, values, manifest, data_dir, reports_dir)
    return reports_dir


def _run_notebooks(todo: list, profile: Profile, values: dict, manifest: dict, data_dir: Path,
                   reports_dir: Path) -> None:
    """Notebooks `todo` in order, the manifest written after each (its earlier notebooks kept when the
    pipeline starts after 01)."""
    manifest_path = PROJECT_ROOT / reports_dir / "manifest.json"
    if manifest_path.exists() and todo[0] != NOTEBOOKS[0]:
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
