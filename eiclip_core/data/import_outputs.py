"""Where `eiclip import-catalog` writes, checked before anything is read or written.

An output never overwrites an input or another output: the files of --out (OUTPUT_FILES) must not be
the table or the mapping, --out must not lie in the images folder, and the --skip-bad report must
not be the table, the mapping, anything under the images folder or anything under --out (which is
written as a whole, io.staged_folder). Paths are compared after following symbolic links, so a link
to the table is the table. Each refusal is one KitError line naming the option, the path and what
it would overwrite.
"""
import os
from pathlib import Path

from eiclip_core.errors import KitError

OUTPUT_FILES = ("train.h5", "validation.h5", "products.csv", "import_report.json")
_DATA_SET = ("train.h5", "validation.h5", "entities.json", "runs")  # another data set lives here


def _real(path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(out, report, table, mapping, images) -> None:
    """KitError unless --out and the --skip-bad report (None without one) can be written without
    overwriting an input or each other (see the module docstring)."""
    out, inputs = Path(out), {"the table": table, "the mapping": mapping}
    inputs = {what: (Path(path), _real(path)) for what, path in inputs.items() if path is not None}
    if out.exists() and not out.is_dir():
        raise KitError(f"--out {out}: is a file, expected a folder")
    if _within(_real(out), _real(images)):
        raise KitError(f"--out {out}: is inside the images folder {images}; import into a folder of its own")
    for name in OUTPUT_FILES:
        for what, (path, real) in inputs.items():
            if _real(out / name) == real:
                raise KitError(f"--out {out}: its {name} would overwrite {what} {path}; import into a new folder")
    held = [name for name in _DATA_SET if os.path.lexists(out / name)]
    if held:
        raise KitError(f"--out {out}: already holds a data set ({held[0]}); import into a new folder")
    held = [name for name in OUTPUT_FILES if os.path.lexists(out / name)]
    if held:
        raise KitError(f"--out {out}: already holds {held[0]}, which the import writes; import into a new folder")
    if report is not None:
        _check_report(Path(report), inputs, _real(images), images, out)


def _check_report(report: Path, inputs: dict, real_images: Path, images, out: Path) -> None:
    real = _real(report)
    where = f"--skip-bad {report}"
    for what, (path, real_input) in inputs.items():
        if real == real_input:
            raise KitError(f"{where}: is {what} {path}; the report never overwrites an input")
    if _within(real, real_images):
        raise KitError(f"{where}: is inside the images folder {images}; name a file elsewhere")
    if _within(real, _real(out)):
        raise KitError(f"{where}: is inside --out {out}, which the import writes as a whole; name a file elsewhere")
    if report.is_dir():
        raise KitError(f"{where}: is a folder; name a file for the report")
    folder = next(f for f in real.parents if f.exists())  # the report's folder may not exist yet
    if not folder.is_dir():
        raise KitError(f"{where}: cannot write here: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise KitError(f"{where}: cannot write here: permission denied")


def remove_stale_temporaries(out) -> None:
    """Remove io.atomic_path's temporary files of the output names (`.<name>.<random>.tmp`) from --out:
    a writer killed there left them; the import itself writes in a temporary folder, so any found in
    --out are stale."""
    out = Path(out)
    if out.is_dir():
        for entry in out.iterdir():
            if entry.is_file() and entry.suffix == ".tmp" and any(
                    entry.name.startswith(f".{name}.") for name in OUTPUT_FILES):
                entry.unlink(missing_ok=True)
