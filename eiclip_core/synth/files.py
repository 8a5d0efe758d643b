"""The generated data set on disk: train.h5 and validation.h5 in the Fashion-Gen schema, and
ground_truth.json (every product's entity values and mention spans), written and read here.

Seeds: each stream of randomness has its own seed sequence [seed, k] (1 world, 2 textures, 3 product
ids, 10+i products of split i, 20+i images of split i), so changing one part never shifts another.
"""
import json
from pathlib import Path

import numpy as np

from eiclip_core.errors import KitError
from eiclip_core.io import atomic_path, write_json
from eiclip_core.profiles import get_profile
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


def generator_settings(profile: str, seed: int = 0, confounding=None, image_size=None,
                       n_train=None, n_val=None) -> dict:
    """The settings of one draw, as recorded in ground_truth.json["generator"]; None means the profile's.

    KitError for a knob outside [0, 1], an image size outside 16..512 px, or a real-data profile."""
    prof = get_profile(profile)
    settings = {"profile": profile, "seed": int(seed),
                "confounding": float(prof.confounding if confounding is None else confounding),
                "image_size": int(prof.image_size if image_size is None else image_size),
                "n_train": int(n_train or prof.n_train_products), "n_val": int(n_val or prof.n_val_products)}
    if not 0.0 <= settings["confounding"] <= 1.0:
        raise KitError(f"--confounding {settings['confounding']}: must be in [0, 1]")
    if not 16 <= settings["image_size"] <= 512:
        raise KitError(f"--image-size {settings['image_size']}: must be between 16 and 512 pixels")
    if settings["n_train"] <= 0 or settings["n_val"] <= 0:
        raise KitError(f"profile {profile!r}: uses real data, not generated data (choose smoke or quick)")
    return settings


def generate(out_dir, profile: str = "smoke", seed: int = 0, confounding=None, image_size=None,
             n_train=None, n_val=None) -> dict:
    """Write train.h5, validation.h5 and ground_truth.json under out_dir; returns {name: Path}.

    Sizes come from the profile unless n_train / n_val are given (notebook 05's smaller sweep data)."""
    settings = generator_settings(profile, seed, confounding, image_size, n_train, n_val)
    size, out = settings["image_size"], Path(out_dir)
    world = build_world(seed, settings["confounding"], settings["n_train"])
    textures = material_textures(size, np.random.default_rng([seed, 2]))
    sizes = {"train": settings["n_train"], "validation": settings["n_val"]}
    id_rng = np.random.default_rng([seed, 3])
    all_ids = id_rng.choice(np.arange(100000, 1000000), size=sum(sizes.values()), replace=False)
    splits, paths, offset = {}, {}, 0
    for i, (split, n) in enumerate(sizes.items()):
        product_rng = np.random.default_rng([seed, 10 + i])
        products = [make_product(world, product_rng) for _ in range(n)]
        ids = np.sort(all_ids[offset:offset + n])
        offset += n
        paths[split] = out / f"{split}.h5"
        _write_split(paths[split], products, ids, world, textures, size,
                     np.random.default_rng([seed, 20 + i]), desc=f"synth {split}")
        splits[split] = [{"product_id": int(pid), "entities": p.entities, "mentions": p.mentions}
                         for pid, p in zip(ids, products)]
    paths["ground_truth"] = out / "ground_truth.json"
    write_json(paths["ground_truth"], {
        "version": GROUND_TRUTH_VERSION,
        "generator": settings,
        "mention_types": ["brand", "category", "subcategory", "composition", "fit"],
        "fit_values": list(FIT_VALUES),
        "ordinary_word_values": world.ordinary_word_values(),
        "splits": splits,
    })
    return paths


def generate_unless_present(out_dir, profile: str, seed: int, confounding: float, image_size: int,
                            n_train=None, n_val=None) -> bool:
    """`generate`, unless out_dir already holds the same draw (same generator settings in its
    ground_truth.json); True when it generated."""
    wanted = generator_settings(profile, seed, confounding, image_size, n_train, n_val)
    truth = Path(out_dir) / "ground_truth.json"
    if truth.exists() and (Path(out_dir) / "validation.h5").exists():
        if json.loads(truth.read_text()).get("generator") == wanted:
            return False
    generate(out_dir, profile, seed, confounding, image_size, n_train, n_val)
    return True


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
    """Write one split in the Fashion-Gen schema; rows of a product contiguous; images in blocks."""
    import h5py

    n_views = rng.choice(6, size=len(products), p=VIEW_COUNT_PROBABILITIES) + 1
    n_rows = int(n_views.sum())
    per_row = lambda key: [p.metadata[key] for p, k in zip(products, n_views) for _ in range(k)]
    columns = {key: per_row(key) for key in METADATA_COLUMNS}
    concat = [f"{m}. {d} {c} {b}".strip() for m, d, c, b in zip(
        columns["name"], columns["description"], columns["composition"], columns["brand"])]
    with atomic_path(dest) as tmp:
        # fixed creation properties and no timestamps: the same seed gives the same bytes
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            def put(key, arr):
                f.create_dataset(key, data=arr, track_times=False)

            images = f.create_dataset("input_image", shape=(n_rows, size, size, 3), dtype=np.uint8,
                                      track_times=False)
            put("input_productID", np.repeat(ids, n_views).astype(np.int32).reshape(-1, 1))
            for key, column in METADATA_COLUMNS.items():
                put(column, _strings(columns[key]))
            put("input_concat_description", _strings(concat))
            put("input_pose", _strings([POSES[v] for k in n_views for v in range(k)]))
            put("input_msrpUSD", np.array(per_row("price"), np.float32).reshape(-1, 1))
            put("index", np.arange(n_rows, dtype=np.int64).reshape(-1, 1))
            put("index_2", np.arange(n_rows, dtype=np.int64))  # 1-D, as in the real files
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
