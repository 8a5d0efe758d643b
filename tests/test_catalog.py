"""`eiclip import-catalog`: presets and mappings import their layouts into files the kit reads, split by
product and deterministically; bad input is one line naming the row, exit status 2, nothing written.

Fixtures follow the documented layouts in a few rows, with small JPEGs written here:
H&M `articles.csv` + `images/<3 digits>/<10-digit id>.jpg`; ABO listings JSON Lines with
language-tagged text + `images/metadata/images.csv` + `images/small/<path>`; a shop's own CSV or JSONL.
"""
import csv
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image, ImageOps

from eiclip_core.cli import main
from eiclip_core.data import FashionGen
from eiclip_core.data.check import check_file
from eiclip_core.data.images import draft_size, load_products, square_image
from eiclip_core.data.importer import ImportSettings, import_catalog
from eiclip_core.data.latin1 import TextPolicy
from eiclip_core.errors import KitError

COLOURS = [(200, 30, 40), (30, 60, 190), (40, 150, 60), (20, 20, 20), (230, 200, 40)]


def jpeg(path: Path, colour, size=(24, 32)) -> Path:
    """A small JPEG of one colour with a darker band, so that views differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), colour, np.uint8)
    pixels[: size[1] // 4] //= 2
    Image.fromarray(pixels).save(path, quality=90)
    return path


def write_csv(path: Path, header: list, rows: list, encoding="utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------ fixtures

HM_COLUMNS = ["article_id", "product_code", "prod_name", "product_type_no", "product_type_name",
              "product_group_name", "colour_group_name", "department_name", "index_name", "section_name",
              "garment_group_name", "detail_desc"]
HM_TYPES = [("Vest top", "Garment Upper body"), ("Trousers", "Garment Lower body"), ("Sneakers", "Shoes")]


def hm_catalog(root: Path, n_codes=6, colours=2) -> tuple:
    """articles.csv (n_codes products in `colours` colours each) and images/<3 digits>/<id>.jpg."""
    rows = []
    for c in range(n_codes):
        code = f"{108775 + c:07d}"
        kind, group = HM_TYPES[c % len(HM_TYPES)]
        for k in range(colours):
            article = f"{code}{k + 1:03d}"
            colour = ["Black", "White", "Dark Blue"][k % 3]
            jpeg(root / "images" / article[:3] / f"{article}.jpg", COLOURS[(c + k) % 5])
            desc = "" if c == 1 else f"Soft jersey {kind.lower()} with a café’s finish — size {c}."
            rows.append([article, code, f"Model {c} {kind}", "253", kind, group, colour, "Jersey Basic",
                         "Ladieswear", "Womens Everyday Basics", "Jersey Basic", desc])
    return write_csv(root / "articles.csv", HM_COLUMNS, rows), root / "images"


def _tagged(*pairs):
    return [{"language_tag": tag, "value": value} for tag, value in pairs]


def abo_catalog(root: Path, n=8) -> tuple:
    """listings.jsonl (ABO layout) and images/{metadata/images.csv, small/<path>}."""
    images, listings = [], []
    for i in range(n):
        ids = [f"{i:02d}mainImg{i}"] + [f"{i:02d}other{k}" for k in range(i % 3)]
        for k, image_id in enumerate(ids):
            path = f"{image_id[:2]}/{image_id}.jpg"
            jpeg(root / "images" / "small" / path, COLOURS[(i + k) % 5], size=(30, 20))
            images.append([image_id, 20, 30, path])
        name = _tagged(("de_DE", f"Schuh {i}"), ("en_US", f"Walking shoe {i}"), ("en_GB", f"Walking trainer {i}"))
        if i == 2:
            name = _tagged(("fr_FR", "Chaussure"), ("en_GB", "Running trainer 2"))
        listing = {"item_id": f"B0{i:08d}X", "item_name": name, "main_image_id": ids[0],
                   "brand": _tagged(("en_US", ["Amazon Basics", "Rivet"][i % 2])),
                   "product_type": [{"value": "SHOES"}],
                   "bullet_point": _tagged(("en_US", "Breathable mesh upper"), ("de_DE", "Atmungsaktiv"),
                                           ("en_US", "Rubber sole.")),
                   "node": [{"node_id": 100 + i, "node_name": "/Categories/Shoes/Men/Sneakers"}],
                   "material": _tagged(("en_US", "Polyester"))}
        if len(ids) > 1:
            listing["other_image_id"] = ids[1:]
        listings.append(listing)
    (root / "images" / "metadata").mkdir(parents=True, exist_ok=True)
    write_csv(root / "images" / "metadata" / "images.csv", ["image_id", "height", "width", "path"], images)
    table = root / "listings.jsonl"
    table.write_text("".join(json.dumps(x) + "\n" for x in listings), encoding="utf-8")
    return table, root / "images"


SHOP_MAPPING = {"product_id": "sku", "name": "title", "description": ["summary", "details"], "brand": "brand",
                "category": "family", "subcategory": "type", "composition": "material", "image": "pictures"}


def shop_catalog(root: Path, n=10, views=2, rows=None) -> tuple:
    """products.csv ("|"-separated picture paths), mapping.json; `rows` replaces or adds rows by index."""
    brands, types = ["Olive", "Arrow", "Maison Kitsuné"], [("TOPS", "SHIRTS", "shirt"), ("BOTTOMS", "TROUSERS", "trousers")]
    table_rows = []
    for i in range(n):
        family, kind, noun = types[i % 2]
        pics = [f"p{i}/v{k}.jpg" for k in range(1 + i % views)]
        for k, pic in enumerate(pics):
            jpeg(root / "img" / pic, COLOURS[(i + k) % 5])
        table_rows.append([f"SKU-{i:03d}", f"{['Red', 'Blue'][i % 2]} slim {noun} {i}",
                           f"Product {i}.", "Regular fit", brands[i % 3], family, kind, "100% cotton", "|".join(pics)])
    for k, row in (rows or {}).items():
        if k < len(table_rows):
            table_rows[k] = row
        else:
            table_rows.append(row)
    header = ["sku", "title", "summary", "details", "brand", "family", "type", "material", "pictures"]
    mapping = root / "mapping.json"
    mapping.write_text(json.dumps(SHOP_MAPPING), encoding="utf-8")
    return write_csv(root / "products.csv", header, table_rows), root / "img", mapping


def run_cli(*args) -> int:
    return main(["import-catalog", *map(str, args)])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_products(out: Path) -> dict:
    return {s: FashionGen(out / f"{s}.h5") for s in ("train", "validation")}


# ------------------------------------------------------------------------------------------- presets


def test_hm_preset_imports_its_layout(tmp_path, capsys):
    table, images = hm_catalog(tmp_path / "hm")
    out = tmp_path / "out"
    assert run_cli(table, "--images", images, "--out", out, "--preset", "hm", "--image-size", 32,
                   "--val-fraction", 0.34, "--processes", 2) == 0
    assert check_file(out / "train.h5") == [] and check_file(out / "validation.h5") == []
    splits = all_products(out)
    products = {s: d.products for s, d in splits.items()}
    assert [len(products[s]) for s in ("train", "validation")] == [8, 4]
    assert splits["train"].image_shape == (32, 32, 3)
    first = products["train"].set_index("product_id").loc[108775001]  # ids kept: 0108775001
    assert first["name"] == "Black Model 0 Vest top" and first["subcategory"] == "Vest top"
    assert first["category"] == "Garment Upper body" and first["gender"] == "Ladieswear"
    assert first["department"] == "Jersey Basic" and first["brand"] == "" and first["composition"] == ""
    assert first["description"] == "Soft jersey vest top with a café's finish - size 0."  # latin-1 policy
    by_id = {p.product_id: p for df in products.values() for p in df.itertuples()}
    assert by_id[108776001].text == "Black Model 1 Trousers"  # no description: the text is the name
    # the colours of one product_code stay in one split
    code_split = {}
    for s, df in products.items():
        for pid in df.product_id:
            code_split.setdefault(pid // 1000, set()).add(s)
    assert all(len(v) == 1 for v in code_split.values()) and len(code_split) == 6
    report = json.loads((out / "import_report.json").read_text())
    assert report["fields"]["brand"] is None and report["fields"]["name"] == ["colour_group_name", "prod_name"]
    assert report["text_changes"]["most_replaced"] and report["counts"]["products"] == 12
    assert report["warnings"] == ["sample-100 will not be measured: 4 validation products, fewer than the 101 "
                                  "candidates each query needs (import more products or raise --val-fraction); "
                                  "the other protocols are"]
    out_text = capsys.readouterr().out
    assert "wrote" in out_text and f"warning: {report['warnings'][0]}" in out_text


def test_abo_preset_picks_english_and_resolves_image_ids(tmp_path):
    table, images = abo_catalog(tmp_path / "abo")
    out = tmp_path / "out"
    result = import_catalog(table, images, out, preset="abo",
                            settings=ImportSettings(val_fraction=0.25, image_size=24, processes=1))
    assert check_file(out / "train.h5") == [] and check_file(out / "validation.h5") == []
    rows = list(csv.DictReader((out / "products.csv").open()))
    assert [r["source_id"] for r in sorted(rows, key=lambda r: int(r["product_id"]))] == \
        [f"B0{i:08d}X" for i in range(8)]  # string ids numbered 1.. in table order
    assert {int(r["images"]) for r in rows} == {1, 2, 3}  # main + other images
    splits = all_products(out)
    by_id = {int(p.product_id): p for d in splits.values() for p in d.products.itertuples()}
    assert by_id[1].name == "Walking shoe 0"  # en_US over de_DE and en_GB
    assert by_id[3].name == "Running trainer 2"  # no en_US: another English tag, never French
    assert by_id[1].description == "Breathable mesh upper. Rubber sole."  # English bullet points only
    assert by_id[1].brand == "Amazon Basics" and by_id[1].category == "SHOES"
    assert by_id[1].subcategory == "Sneakers" and by_id[1].composition == "Polyester" and by_id[1].season == ""
    n_views = {int(p): int(k) for d in splits.values() for p, k in zip(d.products.product_id, d.n_views)}
    assert n_views == {i + 1: 1 + i % 3 for i in range(8)}
    assert result.report["language"].startswith("en_US")


def test_abo_image_id_missing_from_metadata_names_the_row(tmp_path):
    table, images = abo_catalog(tmp_path / "abo", n=4)
    lines = table.read_text().splitlines()
    listing = json.loads(lines[2])
    listing["main_image_id"] = "nosuchimage"
    lines[2] = json.dumps(listing)
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(KitError, match=r"listings.jsonl: row 3 \(product B000000002X\): image id 'nosuchimage' "
                                       r"is not in .*images.csv"):
        import_catalog(table, images, tmp_path / "out", preset="abo")
    assert not (tmp_path / "out").exists()


def test_custom_mapping_csv_and_one_row_per_image_jsonl(tmp_path):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=10, views=3)
    out = tmp_path / "csv"
    import_catalog(table, images, out, mapping, settings=ImportSettings(val_fraction=0.3, image_size=16))
    products = {p.name: p for d in all_products(out).values() for p in d.products.itertuples()}
    p4 = products["Red slim shirt 4"]
    assert p4.description == "Product 4. Regular fit." and p4.brand == "Arrow" and p4.composition == "100% cotton"
    assert p4.season == p4.gender == p4.department == ""  # unmapped: empty, not invented
    assert products["Blue slim trousers 5"].brand == "Maison Kitsuné"  # latin-1 kept as is
    concat = {}
    for d in all_products(out).values():
        with h5py.File(d.path, "r") as f:
            column = f["input_concat_description"][:, 0]
        concat.update({name: column[row].decode("latin-1") for name, row in zip(d.products.name, d.first_row)})
    assert concat["Red slim shirt 4"] == "Red slim shirt 4. Product 4. Regular fit. 100% cotton Arrow"
    # the same catalog, one row per image in JSON Lines with list-valued description cells
    records = []
    for row in csv.DictReader(table.open(encoding="utf-8")):
        for pic in row["pictures"].split("|"):
            records.append({**row, "pictures": pic, "details": [row["details"]], "summary": [row["summary"]]})
    jsonl = tmp_path / "shop" / "per-image.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out2 = tmp_path / "jsonl"
    import_catalog(jsonl, images, out2, mapping, settings=ImportSettings(val_fraction=0.3, image_size=16))
    for s in ("train", "validation"):
        a, b = FashionGen(out / f"{s}.h5"), FashionGen(out2 / f"{s}.h5")
        assert b.products.drop(columns="rows").equals(a.products.drop(columns="rows"))
        assert a.n_views.tolist() == b.n_views.tolist() and a.n_views.max() == 3


def test_parquet_tables_read_like_csv(tmp_path):
    import pandas as pd

    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    parquet = tmp_path / "shop" / "products.parquet"
    pd.read_csv(table, dtype=str, keep_default_na=False).to_parquet(parquet)
    import_catalog(parquet, images, tmp_path / "pq", mapping, settings=ImportSettings(image_size=16))
    import_catalog(table, images, tmp_path / "csv", mapping, settings=ImportSettings(image_size=16))
    assert digest(tmp_path / "pq" / "train.h5") == digest(tmp_path / "csv" / "train.h5")


# ----------------------------------------------------------------------------- images, text, split


def test_images_are_scaled_and_padded_on_white(tmp_path):
    wide = jpeg(tmp_path / "wide.jpg", (200, 30, 40), size=(80, 40))
    img = square_image(wide, 32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (img[:7] >= 250).all() and (img[-7:] >= 250).all()  # white bands above and below
    assert abs(int(img[20, 16, 0]) - 200) < 12 and img[20, 16, 2] < 60  # the image, centred
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:, 5:, 3] = 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    flat = square_image(tmp_path / "half.png", 10)
    assert (flat[:, 0] == 255).all() and (flat[:, -1] == [0, 0, 255]).all()


def photo(path: Path, size=(300, 450), orientation=None) -> Path:
    """A product-shot-like JPEG (shaded shape on white, with noise), optionally with an EXIF orientation."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    body = ((x - w / 2) / (0.3 * w)) ** 2 + ((y - h / 2) / (0.4 * h)) ** 2 < 1
    shade = 0.75 + 0.25 * np.sin(x / 6) * np.cos(y / 9)
    pixels = np.where(body[..., None], np.array([200, 60, 40]) * shade[..., None], 255.0)
    pixels += np.random.default_rng(0).normal(0, 6, (h, w, 3))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90, exif=exif)
    return path


def full_decode_square(path: Path, size: int) -> np.ndarray:
    """The policy applied to the full-resolution decode (square_image without Pillow's draft mode)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        return np.asarray(ImageOps.pad(im, (size, size), method=Image.Resampling.BICUBIC, color=(255, 255, 255)))


def test_jpegs_decoded_at_a_reduced_scale_match_the_full_decode(tmp_path):
    # draft mode reduces as far as the longer side allows: 750 -> 375 for 256, 3000 -> 375 (1/8)
    for (w, h), size, decoded in (((500, 750), 256, (250, 375)), ((3000, 2000), 256, (375, 250)),
                                  ((300, 450), 64, (75, 113)), ((257, 300), 256, (257, 300))):
        Image.new("RGB", (w, h)).save(tmp_path / "d.jpg")
        with Image.open(tmp_path / "d.jpg") as im:
            im.draft("RGB", draft_size(im.size, size))
            assert im.size == decoded
    # the same size, centring and padding as the full decode; pixels within a small tolerance (the
    # reduced decode samples the image slightly differently: single pixels on sharp edges differ most)
    for orientation in (None, 6):
        path = photo(tmp_path / f"p{orientation}.jpg", orientation=orientation)
        for size in (64, 100, 128):
            reduced, full = square_image(path, size).astype(int), full_decode_square(path, size).astype(int)
            white = (full == 255).all(axis=2)
            assert ((reduced == 255).all(axis=2) == white)[:, [0, -1]].all()  # the same white bands
            assert np.abs(reduced - full).mean() < 1.5 and np.percentile(np.abs(reduced - full), 99) < 20
        assert (square_image(path, 256) == full_decode_square(path, 256)).all()  # 450 px: no reduction


def test_pool_results_match_the_one_process_loop_whatever_the_ring_size(tmp_path):
    paths = [jpeg(tmp_path / f"{i}.jpg", COLOURS[i % 5], size=(20 + i, 30)) for i in range(12)]
    views = [1, 3, 2, 5, 1, 1, 4, 2, 1, 3]  # 5 views: more than the ring of 3 slots holds
    tasks, start = [], 0
    for k, n in enumerate(views):
        tasks.append((k, paths[start % 12:start % 12 + n] or paths[:n], 16))
        start += n
    tasks[6] = (6, [tasks[6][1][0], tmp_path / "missing.jpg"], 16)  # a bad product in the middle
    one = list(load_products(tasks, processes=1))
    pooled = [(r.index, None if r.images is None else r.images.copy(), r.problem)
              for r in load_products(tasks, processes=2, chunksize=1, in_flight=3)]
    assert [r.index for r in one] == [index for index, _, _ in pooled] == list(range(len(views)))
    for r, (_, images, problem) in zip(one, pooled):
        assert r.problem == problem
        assert (r.images is None and images is None) or (r.images == images).all()
    assert one[6].problem == "image file not found" and one[3].images.shape == (5, 16, 16, 3)
    assert multiprocessing.active_children() == []


def test_import_does_not_load_torch(tmp_path):
    # importing torch for the sample-100 warning would raise the importer's peak memory by hundreds of MiB
    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    code = ("import sys; from eiclip_core.cli import main; "
            f"code = main(['import-catalog', {str(table)!r}, '--images', {str(images)!r}, '--map', {str(mapping)!r}, "
            f"'--out', {str(tmp_path / 'out')!r}, '--image-size', '16', '--val-fraction', '0.34']); "
            "sys.exit(code or ('torch' in sys.modules and 'torch imported'))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's package
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "sample-100 will not be measured" in done.stdout and (tmp_path / "out" / "validation.h5").exists()


def test_text_policy_keeps_latin1_and_replaces_or_drops_the_rest():
    policy = TextPolicy()
    assert policy("Appliqué  logo,\n½ µ") == "Appliqué logo, ½ µ"
    assert policy("e\u0301te\u0301") == "été"  # composed into latin-1
    assert policy("“Łódź” — ﬁne…") == '"Lódz" - fine...'  # ó is latin-1, Ł and ź are not
    assert policy("Őrség čaj") == "Orség caj"
    assert policy("中文 shirt 👕\x00") == "shirt"
    assert policy("10€ Œuvre™") == "10EUR OEuvre(TM)"
    summary = policy.summary()
    assert summary["values_changed"] == 4 and summary["characters_dropped"] == 3  # composing is no change
    assert "中 (U+4E2D)" in summary["most_dropped"] and "— (U+2014)" in summary["most_replaced"]


def test_split_is_by_product_and_deterministic(tmp_path):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=30)
    files = {}
    for name, seed, processes in (("a", 3, 1), ("b", 3, 2), ("c", 4, 1)):
        import_catalog(table, images, tmp_path / name, mapping,
                       settings=ImportSettings(val_fraction=0.2, seed=seed, image_size=16, processes=processes))
        files[name] = {s: digest(tmp_path / name / f"{s}.h5") for s in ("train", "validation")}
    assert files["a"] == files["b"]  # same seed: same bytes, whatever the number of processes
    ids = {name: {s: set(FashionGen(tmp_path / name / f"{s}.h5").products.product_id) for s in ("train", "validation")}
           for name in ("a", "c")}
    for split in ids.values():
        assert not split["train"] & split["validation"] and len(split["validation"]) == 6
        assert len(split["train"] | split["validation"]) == 30
    assert ids["a"]["validation"] != ids["c"]["validation"]  # another seed, another split


def test_writer_holds_no_text_in_memory_and_writes_it_back_whole(tmp_path):
    """Memory does not grow with the catalog's text: 2000 products with 2 KB descriptions leave the writer
    holding ids and view counts (16 bytes a product); the text waits on disk and is written back whole."""
    import tracemalloc

    from eiclip_core.data.writer import open_writer

    views = np.zeros((1, 16, 16, 3), np.uint8)
    descriptions = ["", "Caf\xe9 cr\xe8me", *(f"{k} " + "d" * 2000 for k in range(2, 2001))]
    with open_writer(tmp_path / "t.h5", image_size=16) as w:
        w.add(0, views, {"name": "first", "description": "opens the spill files"})
        tracemalloc.start()
        for pid, description in enumerate(descriptions, 1):
            w.add(pid, views, {"name": f"product {pid}", "description": description})
        grown = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    assert grown < 200_000  # the descriptions alone are 4 MB
    products = FashionGen(tmp_path / "t.h5").products
    assert products["description"].tolist() == ["opens the spill files", *descriptions]
    assert products["name"].tolist()[-1] == "product 2001" and (products["composition"] == "").all()


def test_writer_hands_images_to_disk_as_it_goes_and_writes_the_same_file(tmp_path, monkeypatch):
    """Every WRITEBACK_BYTES of images the writer asks the kernel to start writing them out; the file is
    byte for byte the one written without those requests."""
    import os

    from eiclip_core.data import writer

    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (1 + k % 3, 16, 16, 3), dtype=np.uint8) for k in range(200)]
    requests = []
    advise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *a: requests.append(a) or advise(fd, *a))
    for name, every in (("plain.h5", 10 ** 12), ("handed.h5", 64 * 16 * 16 * 3)):
        monkeypatch.setattr(writer, "WRITEBACK_BYTES", every)
        with writer.open_writer(tmp_path / name, image_size=16, buffer_rows=16) as w:
            for pid, v in enumerate(views):
                w.add(pid, v, {"name": f"product {pid}"})
    rows = sum(len(v) for v in views)
    assert len(requests) == rows // 64 and all(a == (0, 0, os.POSIX_FADV_DONTNEED) for a in requests)
    assert (tmp_path / "plain.h5").read_bytes() == (tmp_path / "handed.h5").read_bytes()


# ---------------------------------------------------------------------------------------- bad input


def _bad_cases(root: Path) -> dict:
    """case -> (cli arguments, words of the one-line message); each table has exactly one bad row."""
    cases = {}

    def shop(name, rows=None, mapping=None):
        table, images, mapping_path = shop_catalog(root / name, n=6, rows=rows)
        if mapping is not None:
            mapping_path.write_text(json.dumps(mapping))
        return [table, "--images", images, "--map", mapping_path]

    good = ["SKU-099", "Green shirt", "Nice.", "", "Olive", "TOPS", "SHIRTS", "100% cotton"]
    cases["missing image"] = (shop("missing", {3: good + ["p99/none.jpg"]}),
                              ["row 4 (product SKU-099)", "image file not found", "p99/none.jpg"])
    broken = root / "broken" / "img" / "p1" / "v0.jpg"
    cases["unreadable image"] = (shop("broken"), ["row 2 (product SKU-001)", "unreadable image", "v0.jpg"])
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated JPEG: found when decoding
    cases["empty text"] = (shop("empty", {2: ["SKU-050", " ", "", "  ", "Olive", "TOPS", "SHIRTS", "", "p0/v0.jpg"]}),
                           ["row 3 (product SKU-050)", "name and description are both empty"])
    cases["conflicting duplicate"] = (shop("dup", {6: ["SKU-002", "Other title", "Product 2.", "Regular fit",
                                                       "Olive", "TOPS", "SHIRTS", "100% cotton", "p0/v0.jpg"]}),
                                      ["row 7 (product SKU-002)", "repeats row 3 with another name"])
    escape = shop("escape", {1: good + ["../../outside.jpg"]})
    jpeg(root / "outside.jpg", COLOURS[0])
    cases["path escapes"] = (escape, ["row 2 (product SKU-099)", "escapes the images folder"])
    cases["absolute path"] = (shop("absolute", {5: good + [str(root / "outside.jpg")]}),
                              ["row 6 (product SKU-099)", "escapes the images folder"])
    args = shop("latin1")
    text = Path(args[0]).read_text(encoding="utf-8").replace("SKU-004,Red", "SKU-004,R\udce9d")
    Path(args[0]).write_bytes(text.encode("utf-8", "surrogateescape"))
    cases["not UTF-8"] = (args, ["row 5 (product SKU-004)", "not UTF-8", "byte 0xe9", "column 'title'"])
    cases["missing column"] = (shop("column", mapping={**SHOP_MAPPING, "brand": "Brand"}),
                               ["mapping.json", "'brand' names column 'Brand'", "products.csv lacks"])
    return cases


BAD_CASES = ("missing image", "unreadable image", "empty text", "conflicting duplicate", "path escapes",
             "absolute path", "not UTF-8", "missing column")


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    args, words = _bad_cases(tmp_path)[case]
    out = tmp_path / "out"
    assert run_cli(*args, "--out", out, "--image-size", 16, "--processes", 2) == 2
    # a progress bar may have drawn itself on stderr first: the message is the one last line after it
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    err = lines[-1]
    assert err.startswith("error: ") and [line for line in lines if line.startswith("error")] == [err]
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()


def test_skip_bad_leaves_bad_rows_out_and_lists_them(tmp_path, capsys):
    # one table holding a row of each problem
    root = tmp_path / "all"
    good = ["SKU-099", "Green shirt", "Nice.", "", "Olive", "TOPS", "SHIRTS", "100% cotton"]
    rows = {3: good + ["p99/none.jpg"], 4: ["SKU-050", " ", "", "", "", "", "", "", "p0/v0.jpg"],
            12: ["SKU-002", "Other title", "x", "", "", "", "", "", "p2/v0.jpg"],
            13: ["SKU-098", "Grey shirt", "", "", "", "", "", "", "../x.jpg"]}
    table, images, mapping = shop_catalog(root, n=12, rows=rows)
    broken = images / "p7" / "v0.jpg"
    broken.write_bytes(broken.read_bytes()[:60])
    report = tmp_path / "bad.csv"
    out = tmp_path / "out"
    assert run_cli(table, "--images", images, "--out", out, "--map", mapping, "--skip-bad", report,
                   "--image-size", 16, "--val-fraction", 0.25) == 0
    listed = list(csv.DictReader(report.open()))
    by_row = {int(r["row"]): r["problem"] for r in listed}
    assert "image file not found" in by_row[4] and "both empty" in by_row[5]
    assert "repeats row 3 with another name" in by_row[13] and by_row[3].startswith("same product as row 13")
    assert "escapes the images folder" in by_row[14]
    assert "unreadable image" in by_row[8]
    kept = {p for s in ("train", "validation") for p in FashionGen(out / f"{s}.h5").products.name}
    assert len(kept) == 8 and not any(n.startswith(("Other", "Green", "Grey")) for n in kept)
    assert check_file(out / "train.h5") == [] and check_file(out / "validation.h5") == []
    summary = json.loads((out / "import_report.json").read_text())
    assert summary["counts"]["bad_products"] == 5 and summary["skipped"]["report"] == str(report)
    assert "left out 5 bad product(s)" in capsys.readouterr().out


def test_mapping_mistakes_and_an_all_bad_table_are_one_line_each(tmp_path):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=3)
    out = tmp_path / "out"
    for spec, message in (({**SHOP_MAPPING, "colour": "c"}, r"mapping.json: unknown key\(s\) colour"),
                          ({"name": "title"}, "'image' is required"),
                          ({"image": "pictures"}, "map 'name' or 'description'"),
                          ({**SHOP_MAPPING, "brand": 3}, "'brand' must be a column name")):
        mapping.write_text(json.dumps(spec))
        with pytest.raises(KitError, match=message):
            import_catalog(table, images, out, mapping)
    mapping.write_text("{not json")
    with pytest.raises(KitError, match="mapping.json: unreadable mapping"):
        import_catalog(table, images, out, mapping)
    mapping.write_text(json.dumps({**SHOP_MAPPING, "image": "title"}))  # no title is an image path
    with pytest.raises(KitError, match=r"products.csv: 0 good product\(s\)"):
        import_catalog(table, images, out, mapping, skip_bad=tmp_path / "bad.csv")
    assert not out.exists() and not (tmp_path / "bad.csv").exists()


def test_interrupted_import_leaves_no_half_written_file(tmp_path, monkeypatch):
    import eiclip_core.data.importer as importer

    table, images, mapping = shop_catalog(tmp_path / "shop", n=20)
    real = importer.load_products

    def interrupted(tasks, processes):
        for k, result in enumerate(real(tasks, processes)):
            if k == 12:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(importer, "load_products", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_catalog(table, images, tmp_path / "out", mapping, settings=ImportSettings(image_size=16, processes=2))
    assert not (tmp_path / "out").exists()  # no file, no temporary file, not even the folder
    assert multiprocessing.active_children() == []  # the decoding workers are gone too
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        import_catalog(table, images, existing, mapping, settings=ImportSettings(image_size=16))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_a_folder_holding_a_data_set_is_refused(tmp_path):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=4)
    out = tmp_path / "out"
    import_catalog(table, images, out, mapping, settings=ImportSettings(image_size=16, val_fraction=0.5))
    before = digest(out / "train.h5")
    with pytest.raises(KitError, match="already holds a data set"):
        import_catalog(table, images, out, mapping, settings=ImportSettings(image_size=16))
    assert digest(out / "train.h5") == before
    with pytest.raises(KitError, match="--val-fraction 1.0"):
        ImportSettings(val_fraction=1.0)


# ------------------------------------------------------------------------------------- the whole kit


@pytest.mark.slow
def test_mining_training_and_evaluation_run_on_an_imported_catalog(tmp_path):
    from eiclip_core.entities import mine_dataset
    from eiclip_core.pipeline.evaluate_command import evaluate_profile
    from eiclip_core.layout import entities_file
    from eiclip_core.pipeline.reproduce import prepare_data
    from eiclip_core.pipeline.profiles import get_profile
    from eiclip_core.pipeline.profiles import profile_config
    from eiclip_core.train.loop import train

    table, images, mapping = shop_catalog(tmp_path / "shop", n=230)  # season, gender, department unmapped
    data = tmp_path / "data"
    import_catalog(table, images, data, mapping, settings=ImportSettings(val_fraction=0.45, image_size=32))
    profile = get_profile("catalog", max_steps=2, batch_size=8, warmup_steps=1)
    prepare_data(profile, data)  # the catalog profile checks the files and generates nothing
    assert sorted(p.name for p in data.iterdir()) == ["import_report.json", "products.csv", "train.h5",
                                                      "validation.h5"]
    art = mine_dataset(data / "train.h5", data / "validation.h5", entities_file(data), progress=False)
    assert {"olive", "arrow", "maison kitsuné"} <= set(art.values["brand"])
    assert art.values["season"] == ["other"] and art.counts["season"].sum() == 0  # unmapped: no values
    assert art.types == ["brand", "category", "subcategory", "composition", "fit"]  # and no model type
    assert art.coverage["subcategory"]["validation"] > 0.9  # "shirt" / "trousers" in the names
    for row in profile.rows:
        run = train(profile_config(profile, data, row, 0, "cpu"), progress=False)
        assert json.loads((run / "done.json").read_text())["steps"] == 2
    evaluation = evaluate_profile(profile, data, device="cpu")
    assert {(r["row"], r["protocol"]) for r in evaluation.records} == {
        (row, protocol) for row in ("zero-shot", "clip-ft", "ei-clip")
        for protocol in ("full", "full-all-views", "sample-100")}
    sample = [r for r in evaluation.records if r["protocol"] == "sample-100"]
    assert all(r["n_queries"] == 104 and 0 <= r["t2i_r1"] <= r["t2i_r10"] <= 100 for r in sample)
    with pytest.raises(KitError, match="no train file"):
        prepare_data(profile, tmp_path / "nothing")


def test_disk_too_small_for_the_images_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys):
    """Checked before any HDF5 is opened: HDF5 that meets a full disk segfaults on closing the file (the
    error line, then exit -11), so no exception would reach the command line. 10 products x 2 views of
    32 x 32 x 3 need 61 kB; 1 kB is free."""
    import shutil

    table, images, mapping = shop_catalog(tmp_path / "shop")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1 << 10})())
    out = tmp_path / "out"
    assert run_cli(table, "--images", images, "--out", out, "--map", mapping, "--image-size", 32) == 2
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert re.fullmatch(rf"error: {out}/train\.h5: no space left on device \(needs about 1 MiB, 0 MiB free\)",
                        lines[-1]), lines
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------ outputs, whole or not at all


def one_error_line(capsys) -> str:
    """The single error line of a command that failed (a progress bar may have drawn itself first)."""
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert errors == [lines[-1]] and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


@pytest.mark.parametrize("target", ["the table", "a link to the table", "the mapping", "an image",
                                    "the images folder", "the out folder", "a file under out"])
def test_the_skip_report_never_overwrites_an_input_or_an_output(tmp_path, capsys, target):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    out = tmp_path / "out"
    (tmp_path / "link.csv").symlink_to(table)
    report = {"the table": table, "a link to the table": tmp_path / "link.csv", "the mapping": mapping,
              "an image": images / "p0" / "v0.jpg", "the images folder": images / "bad.csv",
              "the out folder": out, "a file under out": out / "train.h5"}[target]
    inputs = {p: p.read_bytes() for p in (table, mapping, images / "p0" / "v0.jpg")}
    assert run_cli(table, "--images", images, "--out", out, "--map", mapping, "--skip-bad", report,
                   "--image-size", 16) == 2
    err = one_error_line(capsys)
    assert f"--skip-bad {report}" in err, err
    assert {p: p.read_bytes() for p in inputs} == inputs and not out.exists()
    assert not (images / "bad.csv").exists()


def test_an_out_folder_whose_files_would_overwrite_an_input_is_refused(tmp_path, capsys):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)  # the table is shop/products.csv
    before = table.read_bytes()
    assert run_cli(table, "--images", images, "--out", table.parent, "--map", mapping, "--image-size", 16) == 2
    err = one_error_line(capsys)
    assert f"--out {table.parent}" in err and "products.csv" in err and "table" in err, err
    assert table.read_bytes() == before and not (table.parent / "train.h5").exists()
    assert run_cli(table, "--images", images, "--out", images / "data", "--map", mapping, "--image-size", 16) == 2
    assert "images folder" in one_error_line(capsys) and not (images / "data").exists()


def test_the_skip_report_takes_any_product_id_and_is_checked_before_anything_is_written(tmp_path, capsys):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    text = table.read_text(encoding="utf-8").replace("SKU-004", "SKU-\udce9")  # an id that is not UTF-8
    table.write_bytes(text.encode("utf-8", "surrogateescape"))
    report, out = tmp_path / "bad.csv", tmp_path / "out"
    report.mkdir()
    assert run_cli(table, "--images", images, "--out", out, "--map", mapping, "--skip-bad", report,
                   "--image-size", 16) == 2
    err = one_error_line(capsys)
    assert f"--skip-bad {report}" in err and "folder" in err and not out.exists()
    report.rmdir()
    assert run_cli(table, "--images", images, "--out", out, "--map", mapping, "--skip-bad", report,
                   "--image-size", 16) == 0
    listed = list(csv.DictReader(report.open(encoding="utf-8")))
    assert [(r["row"], r["product"]) for r in listed] == [("5", "SKU-\\xe9")] and "not UTF-8" in listed[0]["problem"]
    assert json.loads((out / "import_report.json").read_text())["counts"]["bad_products"] == 1


def _finish_then_interrupt_the_last_file(monkeypatch):
    """The second split file is interrupted once its columns are written, the first being complete."""
    from eiclip_core.data import writer

    real, finished = writer.FashionGenWriter.finish, []

    def finish(self):
        real(self)
        finished.append(self)
        if len(finished) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer.FashionGenWriter, "finish", finish)
    return finished


def test_a_data_set_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=8)
    settings = ImportSettings(image_size=16, val_fraction=0.25)
    finished = _finish_then_interrupt_the_last_file(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        import_catalog(table, images, tmp_path / "out", mapping, settings=settings)
    assert len(finished) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["shop"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    finished.clear()
    with pytest.raises(KeyboardInterrupt):
        import_catalog(table, images, existing, mapping, settings=settings)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_the_temporaries_of_a_killed_import_are_removed_by_the_next_one_and_a_live_imports_kept(tmp_path):
    import fcntl

    from eiclip_core.io import STAGE_SUFFIX

    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    out = tmp_path / "out"
    killed = tmp_path / f".out.killed{STAGE_SUFFIX}"  # what a killed run leaves beside a new --out
    killed.mkdir()
    (killed / ".train.h5.x1.tmp").write_bytes(b"half")
    live = tmp_path / f".out.live{STAGE_SUFFIX}"  # a run still writing: it holds the folder's lock
    live.mkdir()
    held = os.open(live, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        import_catalog(table, images, out, mapping, settings=ImportSettings(image_size=16, val_fraction=0.34))
        assert not killed.exists() and live.is_dir()
    finally:
        os.close(held)
    assert sorted(p.name for p in out.iterdir()) == ["import_report.json", "products.csv", "train.h5",
                                                     "validation.h5"]
    existing = tmp_path / "existing"  # an --out that exists: the temporary folder is made inside it
    (existing / f".stage.killed{STAGE_SUFFIX}").mkdir(parents=True)
    (existing / ".train.h5.x2.tmp").write_bytes(b"half")  # a temporary file of an older, killed import
    import_catalog(table, images, existing, mapping, settings=ImportSettings(image_size=16, val_fraction=0.34))
    assert sorted(p.name for p in existing.iterdir()) == ["import_report.json", "products.csv", "train.h5",
                                                          "validation.h5"]


def test_a_signal_while_files_move_into_an_existing_folder_takes_effect_once_all_are_in(tmp_path, monkeypatch):
    import signal

    from eiclip_core import io

    class Stopped(Exception):
        pass

    def stop(*_):
        raise Stopped

    dest = tmp_path / "existing"
    dest.mkdir()
    rename = os.rename
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped), io.staged_folder(dest) as stage:
            for name in ("a.h5", "b.h5", "c.json"):
                (stage / name).write_text(name)
            # each file moved in is followed by a SIGTERM (what `timeout` and schedulers send)
            monkeypatch.setattr(os, "rename", lambda a, b: rename(a, b) or os.kill(os.getpid(), signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in dest.iterdir()) == ["a.h5", "b.h5", "c.json"]


def test_a_killed_runs_forked_child_does_not_keep_its_temporary_folder_locked(tmp_path):
    """A decoding worker outliving its killed parent must not make the stale folder look live."""
    import signal

    from eiclip_core import io

    code = ("import os, signal, sys, time; from eiclip_core import io\n"
            "with io.staged_folder(sys.argv[1]) as stage:\n"
            "    child = os.fork()\n"
            "    if child == 0:  # lets go of the output pipes, so that run() returns\n"
            "        null = os.open(os.devnull, os.O_RDWR); os.dup2(null, 1); os.dup2(null, 2)\n"
            "        time.sleep(60); os._exit(0)\n"
            "    print(stage, child, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, timeout=60)
    stage, child = done.stdout.split()
    try:
        assert done.returncode == -signal.SIGKILL and Path(stage).is_dir()
        io.remove_stale_stages(tmp_path / "out")
        assert not Path(stage).exists()
    finally:
        os.kill(int(child), signal.SIGKILL)


@pytest.mark.slow
def test_an_import_killed_with_sigkill_is_cleaned_up_by_the_next_run(tmp_path):
    table, images, mapping = shop_catalog(tmp_path / "shop", n=12)
    out = tmp_path / "out"
    code = ("import os, signal, sys; from eiclip_core.data import writer; from eiclip_core.cli import main\n"
            "real = writer.FashionGenWriter.add\n"
            "def add(self, *a, **k):\n"
            "    real(self, *a, **k)\n"
            "    if self.n_products == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
            "writer.FashionGenWriter.add = add\n"
            f"main(['import-catalog', {str(table)!r}, '--images', {str(images)!r}, '--map', {str(mapping)!r}, "
            f"'--out', {str(out)!r}, '--image-size', '16', '--processes', '2'])\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == -9, done.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert run_cli(table, "--images", images, "--out", out, "--map", mapping, "--image-size", 16) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shop"]


@pytest.mark.slow
def test_a_decoding_process_that_dies_stops_the_import_in_one_line(tmp_path, monkeypatch, capsys):
    import signal

    from eiclip_core.data import images as images_module

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the import decodes in its own process")
    table, images, mapping = shop_catalog(tmp_path / "shop", n=12)
    real = images_module.square_image

    def dies_on_one_image(path, size):
        if Path(path).parent.name == "p7" and multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
        return real(path, size)

    def hung(*_):
        raise TimeoutError("import-catalog hung after its decoding process died")

    monkeypatch.setattr(images_module, "square_image", dies_on_one_image)
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code = run_cli(table, "--images", images, "--out", tmp_path / "out", "--map", mapping,
                       "--image-size", 16, "--processes", 2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 2
    err = one_error_line(capsys)
    assert "decoding process" in err and "SIGKILL" in err, err
    assert not (tmp_path / "out").exists() and multiprocessing.active_children() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop"]


# --------------------------------------------------------------------------------- images, text

GREYS = np.array([[0, 1, 2, 63, 64, 127, 128, 129], [190, 200, 250, 253, 254, 255, 17, 99]] * 4, np.uint8)


def _grey_image(mode: str) -> Image.Image:
    """GREYS (8 x 8) in `mode`; every mode stands for the same greys."""
    if mode in ("I;16", "I;16B"):  # 16-bit greys g x 257 (Pillow's convert to I;16B would clip them)
        greys = (GREYS.astype(np.uint16) * 257).astype(">u2" if mode == "I;16B" else "<u2")
        return Image.frombytes(mode, (8, 8), greys.tobytes())
    if mode == "I":
        return Image.fromarray(GREYS.astype(np.int32) * 257)
    if mode == "1":
        return Image.fromarray(GREYS >= 128).convert("1")
    grey = Image.fromarray(GREYS)
    if mode == "P":
        return grey.convert("RGB").quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)
    if mode == "CMYK":
        k = 255 - GREYS
        return Image.fromarray(np.stack([np.zeros_like(k)] * 3 + [k], axis=2), "CMYK")
    return grey.convert(mode)


@pytest.mark.parametrize("mode,suffix", [("L", "png"), ("I;16", "png"), ("I;16B", "tif"), ("I", "tif"),
                                         ("1", "png"), ("P", "png"), ("LA", "png"), ("RGBA", "png"),
                                         ("CMYK", "tif"), ("RGB", "png")])
def test_images_of_every_mode_become_8_bit_rgb(tmp_path, mode, suffix):
    """16-bit greys are scaled to 8 bits (clipped instead, a 16-bit grey PNG would come out all white); the
    other modes are converted."""
    path = tmp_path / f"grey.{suffix}"
    _grey_image(mode).save(path)
    with Image.open(path) as im:
        assert im.mode == mode
    img = square_image(path, 8)
    expected = np.where(GREYS >= 128, 255, 0) if mode == "1" else GREYS
    assert img.dtype == np.uint8 and (img == expected[..., None]).all(), (mode, img[..., 0])


def test_an_image_one_pixel_wide_is_imported_like_any_other(tmp_path):
    line = Image.new("RGB", (1, 600), (200, 30, 40))
    line.save(tmp_path / "line.png")
    img = square_image(tmp_path / "line.png", 16)
    assert img.shape == (16, 16, 3) and (img[:, 0] == 255).all() and (img[:, 8] == [200, 30, 40]).all()
    table, images, mapping = shop_catalog(tmp_path / "shop", n=4)
    line.save(images / "p0" / "v0.jpg", format="PNG")  # the first product's picture: 1 x 600
    assert run_cli(table, "--images", images, "--out", tmp_path / "out", "--map", mapping, "--image-size", 16) == 0


def test_text_columns_hold_their_content_and_an_over_long_value_is_refused(tmp_path, capsys, monkeypatch):
    """One long description does not make every row as wide as it (the file stays near its content), the
    free-space check counts the text, and a value longer than check-data accepts is refused first."""
    import shutil

    from eiclip_core.data.h5file import READ_BYTES

    long = " ".join(f"w{k}" for k in range(300_000))  # about 2 MB
    row = ["SKU-100", "Long shirt", long, "", "Olive", "TOPS", "SHIRTS", "100% cotton", "p0/v0.jpg"]
    table, images, mapping = shop_catalog(tmp_path / "shop", n=30, rows={30: row})
    out = tmp_path / "out"
    assert run_cli(table, "--images", images, "--out", out, "--map", mapping, "--image-size", 16,
                   "--val-fraction", 0.2) == 0
    size = sum((out / f"{s}.h5").stat().st_size for s in ("train", "validation"))
    assert size < 4 * len(long), size  # the description and the concatenated one, compressed or not
    assert check_file(out / "train.h5") == [] and check_file(out / "validation.h5") == []
    kept = {p.name: p.description for d in all_products(out).values() for p in d.products.itertuples()}
    assert kept["Long shirt"] == long and kept["Red slim shirt 4"] == "Product 4. Regular fit."
    # the free-space check counts the text: room for the pixels, not for the long description
    pixels = sum(1 + k % 2 for k in range(30)) * 16 * 16 * 3 + 16 * 16 * 3
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type("Usage", (), {"free": pixels + (5 << 19)})())
    assert run_cli(table, "--images", images, "--out", tmp_path / "small", "--map", mapping, "--image-size", 16,
                   "--val-fraction", 0.2) == 2
    assert "no space left on device" in one_error_line(capsys) and not (tmp_path / "small").exists()
    monkeypatch.setattr(shutil, "disk_usage", real)
    # a value over the rows check-data reads: refused before anything is written, naming the row
    row[2] = "x" * (READ_BYTES + 1)
    table, images, mapping = shop_catalog(tmp_path / "huge", n=6, rows={6: row})
    assert run_cli(table, "--images", images, "--out", tmp_path / "huge-out", "--map", mapping,
                   "--image-size", 16) == 2
    err = one_error_line(capsys)
    assert "row 7 (product SKU-100)" in err and "description" in err and "16 MiB" in err, err
    assert not (tmp_path / "huge-out").exists()


# ------------------------------------------------------------------------------- table layouts


def test_table_layout_mistakes_are_one_line_naming_the_problem(tmp_path, capsys):
    import pandas as pd

    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    args = ["--images", images, "--map", mapping, "--image-size", 16]
    lines = table.read_text(encoding="utf-8").splitlines()
    twice = tmp_path / "twice.csv"  # two columns named "title": which one is meant?
    twice.write_text("\n".join([lines[0] + ",title"] + [line + ",Other" for line in lines[1:]]) + "\n")
    assert run_cli(twice, *args, "--out", tmp_path / "o1") == 2
    err = one_error_line(capsys)
    assert "'title'" in err and "twice" in err, err
    trailing = tmp_path / "trailing.csv"  # a separator at the end of every row
    trailing.write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]]) + "\n")
    assert run_cli(trailing, *args, "--out", tmp_path / "o2") == 2
    err = one_error_line(capsys)
    assert "one more field than the header" in err and "SKU-000" not in err.split(":")[0], err
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    for cells, words in (([{"name": b} for b in frame.brand], ["struct", "'value'", "column 'brand'", "row 1"]),
                         ([[("en", b)] for b in frame.brand], ["map", "column 'brand'", "row 1"])):
        parquet = tmp_path / "cells.parquet"
        if words[0] == "map":
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrays = {c: pa.array(frame[c]) for c in frame.columns}
            arrays["brand"] = pa.array(cells, type=pa.map_(pa.string(), pa.string()))
            pq.write_table(pa.table(arrays), parquet)
        else:
            frame.assign(brand=cells).to_parquet(parquet)
        assert run_cli(parquet, *args, "--out", tmp_path / "o3") == 2
        err = one_error_line(capsys)
        assert all(w in err for w in words) and "refused" in err, err
    assert not any((tmp_path / f"o{k}").exists() for k in (1, 2, 3))


def test_json_lines_split_on_newlines_only(tmp_path):
    """U+2028 and U+0085 are valid raw inside a JSON string; str.splitlines() broke lines there."""
    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    rows[2]["summary"] = "Two\u2028lines"
    rows[3]["details"] = "Next\u0085line"
    jsonl = tmp_path / "shop" / "products.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    import_catalog(jsonl, images, tmp_path / "out", mapping, settings=ImportSettings(image_size=16, val_fraction=0.34))
    text = {p.name: p.description for d in all_products(tmp_path / "out").values() for p in d.products.itertuples()}
    assert text["Red slim shirt 2"] == "Twolines. Regular fit."  # U+2028 dropped by the latin-1 policy
    assert text["Blue slim trousers 3"] == "Product 3. Next line."  # U+0085, a control character: a space


def test_odd_ids_seeds_and_process_counts_are_handled_in_one_line(tmp_path, capsys, monkeypatch):
    import eiclip_core.data.importer as importer

    table, images, mapping = shop_catalog(tmp_path / "shop", n=6)
    digits = tmp_path / "digits.csv"  # "10³" passes str.isdigit() but not int()
    digits.write_text(table.read_text(encoding="utf-8").replace("SKU-00", "10").replace("105,", "10³,"),
                      encoding="utf-8")
    assert run_cli(digits, "--images", images, "--map", mapping, "--out", tmp_path / "d", "--image-size", 16) == 0
    source = {r["source_id"]: int(r["product_id"]) for r in csv.DictReader((tmp_path / "d" / "products.csv").open())}
    assert source["10³"] == 6 and source["100"] == 1  # not all plain numbers: numbered in table order
    assert run_cli(table, "--images", images, "--map", mapping, "--out", tmp_path / "s", "--seed", -1) == 2
    assert "--seed -1: must be 0 or more" in one_error_line(capsys) and not (tmp_path / "s").exists()
    asked, real = [], importer.load_products
    monkeypatch.setattr(importer, "load_products",
                        lambda tasks, processes: asked.append(processes) or real(tasks, processes))
    assert run_cli(table, "--images", images, "--map", mapping, "--out", tmp_path / "p", "--processes", 200,
                   "--image-size", 16) == 0
    assert asked == [min(6, len(os.sched_getaffinity(0)))]
