"""`eiclip import-catalog`: a product table and its images -> train.h5 and validation.h5 in Fashion-Gen's schema.

    eiclip import-catalog articles.csv --images h-and-m/images --out data/hm --preset hm --skip-bad data/hm-bad.csv
    eiclip import-catalog products.jsonl --images shop/img --out data/shop --map shop-mapping.json
    eiclip reproduce --profile catalog --data-dir data/shop      # the five notebooks on it

Why: Fashion-Gen is hard to obtain, while most users have some product catalog. The table is read
through a mapping (catalog.py) or a preset (presets.py); text follows the latin-1 policy
(latin1.py); images are decoded in worker processes (images.py) and streamed into the two files
(writer.py). The split is by product (by split group when the mapping has one): a product is never
in both files, and the same table, seed and fraction give the same files, byte for byte, whatever
the number of processes.

Bad input (a missing or unreadable image, empty name and description, a product id repeated with
other text, a table that is not UTF-8, an image path outside the images folder, a text value over
the 16 MiB the kit reads at once) stops the import with one line naming the table row and the
problem, exit status 2, nothing written. With `--skip-bad REPORT.csv` the bad products are left out
and listed there (row, product, problem). Next to the files: import_report.json (counts, mapping,
text changes, skipped rows) and products.csv (product id in the files, source id, split, images).

Nothing is written until every output path is checked (import_outputs.py: no output overwrites an
input or another output) and the free space counted (pixels and text). The four files are written
in a temporary folder and moved into --out at once (io.staged_folder): an interrupted, failed or
killed import leaves no file of the data set, and the next import removes what a killed one left.
"""
import contextlib
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eiclip_core.data.catalog import (FIELDS, CellError, assign_product_ids, bad_rows, check_columns,
                                      escape_not_utf8, extract_products, load_mapping, not_utf8_rows, read_table)
from eiclip_core.data.h5file import READ_BYTES
from eiclip_core.data.images import load_products, usable_cpus
from eiclip_core.data.import_outputs import check_outputs, remove_stale_temporaries
from eiclip_core.data.latin1 import TextPolicy
from eiclip_core.data.presets import PRESETS, prepare_preset
from eiclip_core.data.writer import TEXT_KEYS, open_writer, text_column_bytes
from eiclip_core.errors import KitError
from eiclip_core.io import check_free_space, staged_folder, write_json, write_text
from eiclip_core.layout import SPLITS
from eiclip_core.protocols import sample100_unmeasurable  # torch-free: the importer never loads torch
from eiclip_core.data.product_text import product_text

# per row besides its pixels and text: the numeric columns (24 bytes) and the image chunk's entry in
# HDF5's chunk index (about 70)
ROW_BYTES = 128


@dataclass
class ImportSettings:
    """What decides the files; recorded in import_report.json."""
    val_fraction: float = 0.1
    seed: int = 0
    image_size: int = 256
    processes: int = 1

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise KitError(f"--val-fraction {self.val_fraction}: must be between 0 and 1 (exclusive)")
        if not 16 <= self.image_size <= 1024:
            raise KitError(f"--image-size {self.image_size}: must be between 16 and 1024 pixels")
        if self.processes < 1:
            raise KitError(f"--processes {self.processes}: must be at least 1")
        if self.seed < 0:
            raise KitError(f"--seed {self.seed}: must be 0 or more")


@dataclass
class ImportResult:
    paths: dict  # name -> Path of every file written
    report: dict  # what import_report.json holds
    bad: list = field(default_factory=list)  # BadRow of every row left out


def split_products(products: list, val_fraction: float, seed: int, where="catalog") -> dict:
    """{"train": [...], "validation": [...]} by split group, each sorted by product id.

    Groups are sorted, shuffled with the seed, and taken into validation until it holds
    round(fraction x products) products; so a group (a product, or the colours of one model) is never
    in both splits, and the split depends only on the products, the fraction and the seed.
    """
    groups = sorted({p.group for p in products})
    if len(groups) < 2:
        raise KitError(f"{where}: {len(products)} good product(s) in {len(groups)} split group(s); at least 2 "
                       "are needed, one for each split")
    sizes = {}
    for p in products:
        sizes[p.group] = sizes.get(p.group, 0) + 1
    order = np.random.default_rng(seed).permutation(len(groups))
    wanted, in_val, val_groups = max(1, round(val_fraction * len(products))), 0, set()
    for k in order[:-1]:  # the last group always stays in train
        if in_val >= wanted:
            break
        val_groups.add(groups[k])
        in_val += sizes[groups[k]]
    split = {"train": [p for p in products if p.group not in val_groups],
             "validation": [p for p in products if p.group in val_groups]}
    return {s: sorted(ps, key=lambda p: p.product_id) for s, ps in split.items()}


def with_concat_description(text: dict) -> dict:
    """The product's text plus Fashion-Gen's long description: name. description composition brand
    (as the generator writes it), from the mapped fields only."""
    parts = [product_text(text.get("name", ""), text.get("description", "")), text.get("composition", ""),
             text.get("brand", "")]
    return {**text, "concat_description": " ".join(p for p in parts if p)}


def _read(table_path, images_dir, mapping_path, preset, policy) -> tuple:
    table = read_table(table_path)
    row_problems = not_utf8_rows(table)
    try:
        if preset is not None:
            table, preset_problems, mapping = prepare_preset(preset, table, images_dir, table_path)
            row_problems = {**preset_problems, **row_problems}
        else:
            mapping = load_mapping(mapping_path)
        check_columns(table, mapping, table_path)
        return table, mapping, extract_products(table, mapping, images_dir, policy, row_problems)
    except CellError as e:  # a column's kind, not one product's problem: the whole table is refused
        raise KitError(f"{table_path}: {e}") from None


def _set_aside_over_long(extracted) -> None:
    """Products with a text value longer than READ_BYTES, the most check-data and the reader read of a
    row at once, become bad rows. Latin-1: a character is a byte."""
    kept = []
    for product in extracted.products:
        text = with_concat_description(product.text)
        field = next((f for f, v in text.items() if len(v) > READ_BYTES), None)
        if field is None:
            kept.append(product)
        else:
            extracted.bad += bad_rows(product, product.rows[0], f"text over {READ_BYTES >> 20} MiB (its {field}: "
                                      f"{len(text[field]):,} bytes), more than the kit reads at once")
    extracted.products = kept


def _bytes_needed(splits: dict, image_size: int) -> int:
    """What both files take at most: pixels, text columns as the writer stores them, the numeric columns
    (products whose images turn out bad only take rows away)."""
    total = 0
    for products in splits.values():
        views = np.array([len(p.images) for p in products], np.int64)
        texts = [with_concat_description(p.text) for p in products]
        total += int(views.sum()) * (image_size ** 2 * 3 + ROW_BYTES)
        total += sum(text_column_bytes(np.array([len(t.get(f, "")) for t in texts], np.int64), views)
                     for f in TEXT_KEYS)
    return total


def _first_problem(table_path, bad: list) -> KitError:
    first = min((b for b in bad if b.primary), key=lambda b: b.row)
    more = f" ({len({b.product for b in bad}) - 1} more bad product(s); --skip-bad REPORT.csv leaves them out)"
    return KitError(f"{table_path}: row {first.row} (product {first.product}): {first.problem}"
                    + (more if len({b.product for b in bad}) > 1 else ""))


def _write_splits(splits: dict, out: Path, settings: ImportSettings, table_path, skip: bool) -> tuple:
    """Decode every product's images and write both files; returns (written per split, bad rows)."""
    from tqdm.auto import tqdm

    order = [(s, p) for s in SPLITS for p in splits[s]]
    tasks = ((k, p.images, settings.image_size) for k, (_, p) in enumerate(order))
    written, bad = {s: [] for s in SPLITS}, []
    processes = min(settings.processes, usable_cpus(), len(order))  # more would only wait
    with contextlib.ExitStack() as stack:
        writers = {s: stack.enter_context(open_writer(out / f"{s}.h5", settings.image_size)) for s in SPLITS}
        # closed first on any error: the workers stop before the temporary files are removed
        results = stack.enter_context(contextlib.closing(load_products(tasks, processes)))
        for result in tqdm(results, total=len(order), desc="import", unit="product"):
            split, product = order[result.index]
            if result.images is None:
                row = product.image_rows[product.images.index(Path(result.path))]
                found = bad_rows(product, row, f"{result.problem}: {result.path}")
                if not skip:
                    raise _first_problem(table_path, found)
                bad += found
                continue
            writers[split].add(product.product_id, result.images, with_concat_description(product.text))
            written[split].append(product)
        empty = [s for s in SPLITS if not written[s]]
        if empty:
            raise KitError(f"{table_path}: no good product left for the {empty[0]} split "
                           f"({len(bad)} bad row(s) left out)")
    return written, bad


def import_catalog(table_path, images_dir, out, mapping_path=None, preset=None, settings=None,
                   skip_bad=None) -> ImportResult:
    """Import a catalog into out/train.h5 and out/validation.h5 (see the module docstring).

    skip_bad: None stops at the first bad row (KitError); a path leaves bad products out and lists
    their rows in that CSV. Either mapping_path or preset (a name in PRESETS) is given.
    """
    settings = settings or ImportSettings()
    table_path, images_dir, out = Path(table_path), Path(images_dir), Path(out)
    if (mapping_path is None) == (preset is None):
        raise KitError("give either --map MAPPING.json or --preset NAME")
    if preset is not None and preset not in PRESETS:
        raise KitError(f"--preset {preset}: unknown preset (choose from {', '.join(PRESETS)})")
    if not images_dir.is_dir():
        raise KitError(f"--images {images_dir}: not a folder")
    check_outputs(out, skip_bad, table_path, mapping_path, images_dir)
    policy = TextPolicy()
    table, mapping, extracted = _read(table_path, images_dir, mapping_path, preset, policy)
    _set_aside_over_long(extracted)
    if extracted.bad and skip_bad is None:
        raise _first_problem(table_path, extracted.bad)
    id_policy = assign_product_ids(extracted.products)
    splits = split_products(extracted.products, settings.val_fraction, settings.seed, table_path)
    check_free_space(out / f"{SPLITS[0]}.h5", _bytes_needed(splits, settings.image_size))
    remove_stale_temporaries(out)
    paths = {**{s: out / f"{s}.h5" for s in SPLITS}, "products": out / "products.csv",
             "report": out / "import_report.json"}
    if skip_bad is not None:
        paths["skip_report"] = Path(skip_bad)
    with staged_folder(out) as stage:
        written, bad_images = _write_splits(splits, stage, settings, table_path, skip_bad is not None)
        bad = sorted(extracted.bad + bad_images, key=lambda b: b.row)
        counts = {"table_rows": len(table), "products": sum(len(v) for v in written.values()),
                  "bad_rows": len(bad), "bad_products": len({b.product for b in bad}),
                  **{s: {"products": len(written[s]), "images": sum(len(p.images) for p in written[s])}
                     for s in SPLITS}}
        report = _report(table_path, images_dir, preset, mapping, settings, counts, id_policy, policy, bad,
                         paths.get("skip_report"))
        write_text(stage / paths["products"].name, escape_not_utf8(_products_csv(written)))
        write_json(stage / paths["report"].name, report)
        if skip_bad is not None:  # before the data set moves in: a run killed in between leaves no data set
            write_text(paths["skip_report"], escape_not_utf8(_bad_csv(bad)))
    return ImportResult(paths, report, bad)


def _products_csv(written: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["product_id", "source_id", "split", "images", "rows"])
    for s in SPLITS:
        for p in written[s]:
            w.writerow([p.product_id, p.source_id, s, len(p.images), " ".join(map(str, p.rows))])
    return buf.getvalue()


def _bad_csv(bad: list) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "product", "problem"])
    w.writerows([b.row, b.product, b.problem] for b in bad)
    return buf.getvalue()


def _report(table_path, images_dir, preset, mapping, settings, counts, id_policy, policy, bad, skip_report):
    too_few = sample100_unmeasurable(counts["validation"]["products"])
    warnings = [f"sample-100 will not be measured: {too_few}; the other protocols are"] if too_few else []
    reasons = {}
    for b in bad:
        if b.primary:
            key = b.problem.split(":")[0].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
    shown = lambda cols: [PRESETS[preset].derived.get(c, c) if preset else c for c in cols] or None  # noqa: E731
    return {
        "version": 1, "table": str(table_path), "images": str(images_dir), "mapping": mapping.source,
        "fields": {f: shown(mapping.fields.get(f, ())) for f in FIELDS},
        "image": shown(mapping.image), "split_group": shown([mapping.split_group] if mapping.split_group else []),
        "language": (f"{mapping.language} values, else another {mapping.language.split('_')[0]}_* tag; "
                     "other languages are not imported") if mapping.language else None,
        "settings": vars(settings), "product_ids": id_policy, "counts": counts,
        "text_policy": "latin-1 (eiclip_core/data/latin1.py)", "text_changes": policy.summary(),
        "skipped": {"report": str(skip_report) if skip_report else None, "products_by_problem": reasons},
        "warnings": warnings,
    }


def add_arguments(parser) -> None:
    parser.add_argument("table", metavar="TABLE", help="product table: .csv, .jsonl (or .json.gz) or .parquet")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder the image paths are relative to")
    parser.add_argument("--out", required=True, metavar="DIR", help="new folder for train.h5, validation.h5 and the report")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--map", dest="mapping", metavar="MAPPING.json", help="which column is which field")
    how.add_argument("--preset", choices=sorted(PRESETS), help="mapping of a known catalog (hm, abo)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of products in validation.h5")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    parser.add_argument("--image-size", type=int, default=256, help="P: images are P x P, padded with white")
    parser.add_argument("--processes", type=int, default=min(4, os.cpu_count() or 1),
                        help="image decoding processes (default: up to 4; at most one per CPU and per product)")
    parser.add_argument("--skip-bad", metavar="REPORT.csv",
                        help="leave bad products out and list their rows here, a file outside the inputs and "
                             "--out (default: stop at the first)")


def run(args) -> int:
    settings = ImportSettings(args.val_fraction, args.seed, args.image_size, args.processes)
    result = import_catalog(args.table, args.images, args.out, args.mapping, args.preset, settings, args.skip_bad)
    report = result.report
    c = report["counts"]
    for s in SPLITS:
        print(f"wrote {result.paths[s]}: {c[s]['products']} products, {c[s]['images']} images "
              f"of {settings.image_size}x{settings.image_size}")
    if result.bad:
        print(f"left out {c['bad_products']} bad product(s) ({c['bad_rows']} rows), listed in {result.paths['skip_report']}")
    if report["language"]:
        print(f"language: {report['language']}")
    changes = report["text_changes"]
    if changes["values_changed"]:
        print(f"text: {changes['values_changed']} value(s) had characters outside latin-1 "
              f"({changes['characters_replaced']} replaced, {changes['characters_dropped']} dropped; see the report)")
    for w in report["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {result.paths['report']}")
    return 0
