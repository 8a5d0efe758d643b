"""The generated data set on disk: train.h5 and validation.h5 in the Fashion-Gen schema, and
ground_truth.json (every product's entity values and mention spans), written and read here.

A data set is written as a whole: the files are generated in a temporary folder inside out_dir, moved
into place (a file whose bytes are unchanged is kept, so runs made from it stay valid), and only then
is COMPLETE_MARKER written, recording the generator settings and every file's size and sha256. The
marker is removed before anything else is written, so a killed `synth` never leaves a set that
`generate_unless_present` (reproduce, the harm and sweep data) takes for complete; the next run
removes what the killed one left (STALE_PATTERNS).

Seeds: each stream of randomness has its own seed sequence [seed, k] (1 world, 2 textures, 3 product
ids, 10+i products of split i, 20+i images of split i), so changing one part never shifts another.
"""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from eiclip_core.errors import KitError
from eiclip_core.io import atomic_path, check_free_space, write_error, write_json, writable_dir
from eiclip_core.synth.product import make_product, render_product
from eiclip_core.synth.render import material_textures
from eiclip_core.synth.world import FIT_VALUES, build_world

GROUND_TRUTH_VERSION = 1
VIEW_COUNT_PROBABILITIES = np.array([0.1, 0.15, 0.22, 0.25, 0.18, 0.1])  # 1..6 views per product
POSES = ("id_gridfs_1", "id_gridfs_2", "id_gridfs_3", "id_gridfs_4", "id_gridfs_5", "id_gridfs_6")
# product metadata key -> HDF5 key of its column
METADATA_COLUMNS = {
    "name": "input_name", "description": "input_description", "brand": "input_brand",
    "category": "input_category", "subcategory": "input_subcategory", "composition": "input_composition",
    "season": "input_season", "gender": "input_gender", "department": "input_department",
}
IMAGE_BLOCK_ROWS = 1024  # images are rendered and written this many rows at a time (bounded memory)
FILE_NAMES = {"train": "train.h5", "validation": "validation.h5", "ground_truth": "ground_truth.json"}
COMPLETE_MARKER = ".synth-complete.json"  # written last: settings and the identity of every file
STALE_PATTERNS = (".synth-*.partial", ".train.h5.*.tmp", ".validation.h5.*.tmp", ".ground_truth.json.*.tmp")


def generator_settings(profile: str, seed: int, confounding: float, image_size: int, n_train: int, n_val: int,
                       validation_only: bool = False) -> dict:
    """The settings of one draw, as recorded in ground_truth.json["generator"].

    profile: the name of the profile the draw is made for, recorded with it (the generator reads
    nothing of it: the caller resolves a profile's sizes, eiclip_core.pipeline.synth_command).
    validation_only: the same world and validation products, without rendering the training split (the
    zero-shot harm reads only the validation split; the key is recorded only when set).

    KitError for a knob outside [0, 1], an image size outside 16..512 px, a negative seed or an empty split."""
    settings = {"profile": profile, "seed": int(seed), "confounding": float(confounding),
                "image_size": int(image_size), "n_train": int(n_train), "n_val": int(n_val)}
    if not 0.0 <= settings["confounding"] <= 1.0:
        raise KitError(f"--confounding {settings['confounding']}: must be in [0, 1]")
    if not 16 <= settings["image_size"] <= 512:
        raise KitError(f"--image-size {settings['image_size']}: must be between 16 and 512 pixels")
    if settings["seed"] < 0:  # numpy's seed sequences refuse negative seeds
        raise KitError(f"--seed {settings['seed']}: must be 0 or more")
    if settings["n_train"] <= 0 or settings["n_val"] <= 0:
        raise KitError(f"n_train={settings['n_train']}, n_val={settings['n_val']}: a generated data set needs "
                       "products in both splits")
    if validation_only:
        settings["validation_only"] = True
    return settings


def file_names(settings: dict) -> dict:
    """{key: file name} of the files a draw with these settings writes."""
    return {k: v for k, v in FILE_NAMES.items() if not (k == "train" and settings.get("validation_only"))}


def generate(out_dir, profile: str, seed: int, confounding: float, image_size: int, n_train: int, n_val: int,
             validation_only: bool = False) -> dict:
    """Write train.h5, validation.h5 and ground_truth.json under out_dir as one set (see the module
    docstring and generator_settings); returns {name: Path}."""
    settings = generator_settings(profile, seed, confounding, image_size, n_train, n_val, validation_only)
    out = writable_dir(out_dir)
    _remove_stale(out)
    with _partial_folder(out) as partial:
        _write_set(partial, settings)
        files = {name: _install(partial / name, out / name) for name in file_names(settings).values()}
    write_json(out / COMPLETE_MARKER, {"generator": settings, "files": files})
    return {key: out / name for key, name in file_names(settings).items()}


def _write_set(out: Path, settings: dict) -> None:
    """The three files of one draw under `out` (the temporary folder of `generate`)."""
    seed, size = settings["seed"], settings["image_size"]
    world = build_world(seed, settings["confounding"], settings["n_train"])
    textures = material_textures(size, np.random.default_rng([seed, 2]))
    sizes = {"train": settings["n_train"], "validation": settings["n_val"]}
    id_rng = np.random.default_rng([seed, 3])
    all_ids = id_rng.choice(np.arange(100000, 1000000), size=sum(sizes.values()), replace=False)
    splits, offset = {}, 0
    for i, (split, n) in enumerate(sizes.items()):
        if split not in file_names(settings):  # its products and ids are skipped; other streams unchanged
            offset += n
            continue
        product_rng = np.random.default_rng([seed, 10 + i])
        products = [make_product(world, product_rng) for _ in range(n)]
        ids = np.sort(all_ids[offset:offset + n])
        offset += n
        _write_split(out / FILE_NAMES[split], products, ids, world, textures, size,
                     np.random.default_rng([seed, 20 + i]), desc=f"synth {split}")
        splits[split] = [{"product_id": int(pid), "entities": p.entities, "mentions": p.mentions}
                         for pid, p in zip(ids, products)]
    write_json(out / FILE_NAMES["ground_truth"], {
        "version": GROUND_TRUTH_VERSION,
        "generator": settings,
        "mention_types": ["brand", "category", "subcategory", "composition", "fit"],
        "fit_values": list(FIT_VALUES),
        "ordinary_word_values": world.ordinary_word_values(),
        "splits": splits,
    })


def generate_unless_present(out_dir, profile: str, seed: int, confounding: float, image_size: int,
                            n_train: int, n_val: int, validation_only: bool = False) -> bool:
    """`generate`, unless out_dir already holds the same draw, complete: its COMPLETE_MARKER names the
    same generator settings and every file still has the size and sha256 it records. True when it
    generated."""
    wanted = generator_settings(profile, seed, confounding, image_size, n_train, n_val, validation_only)
    if not is_complete(out_dir, wanted):
        generate(out_dir, profile, seed, confounding, image_size, n_train, n_val, validation_only)
        return True
    return False


def is_complete(out_dir, settings: dict) -> bool:
    """out_dir holds the whole set of `settings`, as `generate` wrote it (no file missing, mixed or changed)."""
    out = Path(out_dir)
    try:
        marker = json.loads((out / COMPLETE_MARKER).read_text(encoding="utf-8"))
        return marker.get("generator") == settings and all(
            _identity(out / name) == marker["files"][name] for name in file_names(settings).values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _identity(path: Path) -> dict:
    """Size and sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _install(new: Path, dest: Path) -> dict:
    """Move `new` to `dest` unless dest already has the same bytes (then it is kept, with its mtime, so the
    runs that recorded its identity stay valid); the installed file's identity."""
    identity = _identity(new)
    if not (dest.is_file() and _identity(dest) == identity):
        os.replace(new, dest)
    return identity


@contextlib.contextmanager
def _partial_folder(out: Path):
    """A temporary folder inside `out` (same file system: moving out of it is a rename), removed at the end;
    one that a killed run leaves behind is removed by the next `generate` (_remove_stale). A KitError
    raised inside names the paths under `out`."""
    try:
        partial = Path(tempfile.mkdtemp(prefix=".synth-", suffix=".partial", dir=out))
    except OSError as e:
        raise write_error(out, e) from None
    try:
        yield partial
    except KitError as e:  # name the file the user asked for, not its temporary place
        raise KitError(str(e).replace(str(partial), str(out))) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_stale(out: Path) -> None:
    """Before writing: the completion marker (the set is incomplete from now until it is written again),
    and the temporary files and folders of a killed run."""
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
    for pattern in STALE_PATTERNS:
        for stale in out.glob(pattern):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def load_ground_truth(path) -> dict:
    """The generator's ground_truth.json; KitError naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{path}: ground truth not found (only generated data sets have one: "
                       "`eiclip synth`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(truth, dict) or truth.get("version") != GROUND_TRUTH_VERSION or "splits" not in truth:
        raise KitError(f"{path}: not a version-{GROUND_TRUTH_VERSION} ground truth file")
    return truth


def _strings(values) -> np.ndarray:
    """(N, 1) fixed-width latin-1 byte strings, width = longest value (real widths are not confirmed)."""
    raw = [v.encode("latin-1") for v in values]
    return np.array(raw, dtype=f"S{max(1, max((len(r) for r in raw), default=1))}").reshape(-1, 1)


def _write_split(dest: Path, products: list, ids: np.ndarray, world, textures: dict, size: int, rng, desc: str):
    """Write one split in the Fashion-Gen schema; rows of a product contiguous; images in blocks.

    The free space is checked first (io.check_free_space): HDF5 that meets a full disk may crash the process."""
    import h5py

    n_views = rng.choice(6, size=len(products), p=VIEW_COUNT_PROBABILITIES) + 1
    n_rows = int(n_views.sum())
    per_row = lambda key: [p.metadata[key] for p, k in zip(products, n_views) for _ in range(k)]
    columns = {key: per_row(key) for key in METADATA_COLUMNS}
    concat = [f"{m}. {d} {c} {b}".strip() for m, d, c, b in zip(
        columns["name"], columns["description"], columns["composition"], columns["brand"])]
    arrays = {"input_productID": np.repeat(ids, n_views).astype(np.int32).reshape(-1, 1),
              **{column: _strings(columns[key]) for key, column in METADATA_COLUMNS.items()},
              "input_concat_description": _strings(concat),
              "input_pose": _strings([POSES[v] for k in n_views for v in range(k)]),
              "input_msrpUSD": np.array(per_row("price"), np.float32).reshape(-1, 1),
              "index": np.arange(n_rows, dtype=np.int64).reshape(-1, 1),
              "index_2": np.arange(n_rows, dtype=np.int64)}  # 1-D, as in the real files
    check_free_space(dest, n_rows * size * size * 3 + sum(a.nbytes for a in arrays.values()))
    with atomic_path(dest) as tmp:
        # fixed creation properties and no timestamps: the same seed gives the same bytes
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            images = f.create_dataset("input_image", shape=(n_rows, size, size, 3), dtype=np.uint8,
                                      track_times=False)
            for key, arr in arrays.items():
                f.create_dataset(key, data=arr, track_times=False)
            _write_images(images, products, n_views, world, textures, size, rng, desc)


def _write_images(images, products: list, n_views: np.ndarray, world, textures, size: int, rng, desc: str):
    """Render every product's views in order and write them IMAGE_BLOCK_ROWS rows at a time."""
    from tqdm.auto import tqdm

    block, start, row = [], 0, 0
    for product, k in zip(tqdm(products, desc=desc, leave=False), n_views):
        block.append(render_product(product.look, world, textures, size, int(k), rng))
        row += int(k)
        if row - start >= IMAGE_BLOCK_ROWS or product is products[-1]:
            images[start:row] = np.concatenate(block)
            block, start = [], row
