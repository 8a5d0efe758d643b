"""The generated data set: exact Fashion-Gen schema, determinism, exact ground truth, visible attributes."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from eiclip_core.cli import main
from eiclip_core.data import FashionGen
from eiclip_core.data.fashiongen import INT_KEYS, REQUIRED_KEYS, STRING_KEYS
from eiclip_core.errors import KitError
from eiclip_core.synth import generate, generate_unless_present, load_ground_truth
from eiclip_core.synth.world import BRAND_ORDINARY, CATALOGUE, COLOURS, FIT_VALUES, FIT_WIDTH, MATERIALS
from eiclip_core.data.product_text import normalise_value, product_text

MARK = slice(48, 60)  # rows / columns of the brand mark at 64 pixels (render.draw_glyph)
# the smoke profile's own draw (the session's smoke_data fixture)
SMOKE = dict(profile="smoke", seed=0, confounding=0.8, image_size=64, n_train=256, n_val=128)


def _bytes(paths):
    return {k: p.read_bytes() for k, p in paths.items()}


@pytest.fixture(scope="module")
def gt(smoke_data):
    return json.loads(smoke_data["ground_truth"].read_text())


def test_schema_equals_documented_real_schema(smoke_data):
    for split in ("train", "validation"):
        with h5py.File(smoke_data[split], "r") as f:
            assert set(f.keys()) == set(REQUIRED_KEYS)
            n = f["input_image"].shape[0]
            assert f["input_image"].shape == (n, 64, 64, 3) and f["input_image"].dtype == np.uint8
            for key in REQUIRED_KEYS[1:]:
                assert f[key].shape == ((n,) if key == "index_2" else (n, 1)), key
            for key in STRING_KEYS:
                assert f[key].dtype.kind == "S", key  # fixed-width byte strings
            for key in INT_KEYS:
                assert f[key].dtype.kind == "i", key
            assert f["input_msrpUSD"].dtype.kind == "f"
            seasons = {s.decode() for s in f["input_season"][:, 0]}
            assert seasons <= {f"{a}{y}" for a in ("SS", "FW") for y in range(2014, 2019)}
            assert {d.decode() for d in f["input_department"][:, 0]} <= {"CLOTHING", "SHOES", "BAGS"}
            for key in ("input_category", "input_subcategory"):
                assert all(v.upper() == v for v in f[key][:, 0])
            text = b" ".join(f["input_description"][:, 0]) + b" ".join(f["input_brand"][:, 0])
            assert re.search(rb"[\xe0-\xff]", text)  # accented latin-1 letters, as in the real data
            compositions = {c.decode("latin-1") for c in f["input_composition"][:, 0]}
            assert all(re.fullmatch(r"(Shell: )?\d+% \w+(, \d+% \w+)?\.( Lining: 100% \w+\.)?", c) for c in compositions)


def test_same_seed_same_bytes_different_seed_different(tmp_path, smoke_data):
    from eiclip_core.synth.files import COMPLETE_MARKER

    again = generate(tmp_path / "again", **SMOKE)
    assert _bytes(again) == _bytes(smoke_data)
    other = _bytes(generate(tmp_path / "other", **{**SMOKE, "seed": 1}))
    assert all(other[k] != v for k, v in _bytes(smoke_data).items())
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [  # no temporary file or folder left
        COMPLETE_MARKER, "ground_truth.json", "train.h5", "validation.h5"]


def test_ground_truth_header(gt):
    assert gt["version"] == 1
    assert gt["generator"] == {"profile": "smoke", "seed": 0, "confounding": 0.8, "image_size": 64,
                               "n_train": 256, "n_val": 128}
    assert gt["mention_types"] == ["brand", "category", "subcategory", "composition", "fit"]
    assert gt["fit_values"] == list(FIT_VALUES)


def _vocabulary(gt):
    """Every entity value of the data set, by type (fit: the fixed list)."""
    vocab = {t: set() for t in gt["mention_types"]}
    for split in gt["splits"].values():
        for p in split:
            for t in vocab:
                if t in p["entities"]:
                    vocab[t].add(p["entities"][t])
    vocab["fit"] = set(gt["fit_values"])
    vocab["subcategory"] |= {form for v in vocab["subcategory"] for form in _singulars(v)}
    return vocab


def _singulars(value):
    """"bombers" -> {"bomber"}, "dresses" -> {"dresse", "dress"}: names use the singular garment noun."""
    return {value[:-n] for n in (1, 2) if value.endswith("es"[-n:]) and len(value) > n + 2}


@pytest.mark.parametrize("split", ["train", "validation"])
def test_ground_truth_matches_file_and_text(split, smoke_data, gt):
    _check_ground_truth(smoke_data, gt, split)


@pytest.mark.parametrize("confounding,seed", [(0.0, 5), (1.0, 6)])
def test_ground_truth_exact_at_both_ends_of_the_knob(confounding, seed, tmp_path):
    paths = generate(tmp_path, **{**SMOKE, "seed": seed, "confounding": confounding, "image_size": 16})
    truth = json.loads(paths["ground_truth"].read_text())
    for split in ("train", "validation"):
        _check_ground_truth(paths, truth, split)


def _check_ground_truth(paths, gt, split):
    ds = FashionGen(paths[split])
    rows = gt["splits"][split]
    assert [r["product_id"] for r in rows] == ds.products.product_id.tolist()
    vocab = _vocabulary(gt)
    # every value as a whole word, case-insensitive ("relaxed" in "relaxed-fit" counts, "shirts" in "t-shirts" not)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted((re.escape(v) for vs in vocab.values() for v in vs),
                                                           key=len, reverse=True)) + r")(?!\w)", re.I)
    counts = {t: 0 for t in gt["mention_types"]}
    for r, (_, p) in zip(rows, ds.products.iterrows()):
        text, ent = p.text, r["entities"]
        assert text == product_text(p["name"], p["description"])
        assert ent["brand"] == normalise_value(p.brand) and ent["category"] == normalise_value(p.category)
        assert ent["subcategory"] == normalise_value(p.subcategory) and ent["season"] == normalise_value(p.season)
        shares = {m: int(s) for s, m in re.findall(r"(\d+)% (\w+)", p.composition.split("Lining")[0])}
        assert ent["composition"] == max(shares, key=shares.get)
        assert ("fit" in ent) == (p.department == "CLOTHING")
        spans = sorted((s, e) for s, e, _, _ in r["mentions"])
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # no overlap
        for s, e, t, v in r["mentions"]:
            surface = normalise_value(text[s:e])
            assert v == ent[t] and (surface == v or (t == "subcategory" and surface in _singulars(v)))
            counts[t] += 1
        # no entity word anywhere else in the text: the recorded mentions are all there is
        assert sorted((m.start(), m.end()) for m in pattern.finditer(text)) == spans, text
        for col in ("brand", "category", "subcategory", "composition", "season", "gender", "department"):
            assert not any(re.search(rf"\b{f}\b", p[col], re.I) for f in FIT_VALUES)  # fit: text and image only
    n = len(rows)
    for t in gt["mention_types"]:
        assert 0.1 * n < counts[t] < 3 * n, t  # each type mentioned sometimes, not always


def test_product_ids_unique_across_splits(gt):
    ids = [r["product_id"] for split in gt["splits"].values() for r in split]
    assert len(ids) == len(set(ids))


def test_confounding_knob(tmp_path, smoke_data):
    def world(c):
        paths = generate(tmp_path / str(c), **{**SMOKE, "confounding": c, "image_size": 16})
        g = json.loads(paths["ground_truth"].read_text())
        brands = {r["entities"]["brand"] for s in g["splits"].values() for r in s}
        return g["ordinary_word_values"], brands

    ordinary = {w.lower() for w in BRAND_ORDINARY}
    low, low_brands = world(0.0)
    assert low["brand"] == low["category"] == low["subcategory"] == []
    assert not low_brands & ordinary
    half, half_brands = world(0.5)
    assert 0.3 < len(half_brands & ordinary) / len(half_brands) < 0.7
    high, high_brands = world(1.0)
    assert high_brands <= ordinary and sorted(high_brands) == high["brand"]
    assert "tops" in high["category"] and len(high["subcategory"]) == sum(len(c.subs) for c in CATALOGUE)
    with pytest.raises(KitError, match="confounding"):
        generate(tmp_path / "x", **{**SMOKE, "confounding": 1.5})


# ---------------------------------------------------------------------------------------------
# the premise: every attribute is visible in the image

def _first_views(smoke_data, split):
    ds = FashionGen(smoke_data[split])
    return ds, np.stack([ds.image(r) for r in ds.first_row]).astype(np.float32)


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y):
    labels = sorted(set(train_y))
    centroids = np.stack([train_x[np.array(train_y) == y].mean(0) for y in labels])
    d = ((test_x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float(np.mean(np.array(labels)[d.argmin(1)] == np.array(test_y)))


def test_attributes_are_visible(smoke_data, gt):
    tr, xtr = _first_views(smoke_data, "train")
    va, xva = _first_views(smoke_data, "validation")
    ent = {s: [r["entities"] for r in gt["splits"][s]] for s in ("train", "validation")}
    mask_tr, mask_va = (xtr.min(-1) < 235), (xva.min(-1) < 235)  # garment pixels (background is white)

    # silhouette -> subcategory: nearest centroid on the 16x16 garment mask
    sil = lambda m: m.reshape(len(m), 16, 4, 16, 4).mean((2, 4)).reshape(len(m), -1)
    acc = _nearest_centroid_accuracy(sil(mask_tr), [e["subcategory"] for e in ent["train"]],
                                     sil(mask_va), [e["subcategory"] for e in ent["validation"]])
    assert acc > 0.8, acc

    # colour word of the name -> mean garment colour, nearest to the named colour (season-shifted)
    words = [next(w for w in n.lower().split() if w in COLOURS) for n in va.products.name]
    outside_mark = np.ones((64, 64), bool)
    outside_mark[MARK, MARK] = False  # the brand mark: 3 x 3 cells of 4 pixels, one cell from the corner
    inside = (mask_va & outside_mark)[..., None]
    mean = (xva * inside).sum((1, 2)) / np.maximum(inside.sum((1, 2)), 1)
    ref = {w: np.array(c, float) for w, c in COLOURS.items()}
    guess = [min(ref, key=lambda w: np.abs(m - (ref[w] * 0.86 + (36 if s.startswith("SS") else 0))).sum())
             for m, s in zip(mean, va.products.season)]
    assert np.mean([g == w for g, w in zip(guess, words)]) > 0.7

    # brand -> the corner glyph of the first view identifies it exactly
    glyph = lambda x: (x[:, MARK, MARK].reshape(len(x), -1) < 200).astype(np.float32)
    acc = _nearest_centroid_accuracy(glyph(xtr), [e["brand"] for e in ent["train"]],
                                     glyph(xva), [e["brand"] for e in ent["validation"]])
    assert acc > 0.95, acc

    # fit -> width: within one silhouette, wider fits cover more pixels
    width = {f: [] for f in FIT_VALUES}
    for e, m in zip(ent["train"], mask_tr):
        if e.get("fit") and e["subcategory"] in ("t-shirts", "tees"):
            width[e["fit"]].append((m & outside_mark).any(0).sum())
    order = sorted((f for f in FIT_VALUES if width[f]), key=FIT_WIDTH.get)
    means = [np.mean(width[f]) for f in order]
    assert np.corrcoef([FIT_WIDTH[f] for f in order], means)[0, 1] > 0.9

    # composition -> texture: nearest centroid on the garment's horizontal/vertical pixel differences
    def tex(x, m):
        g = x.mean(-1)
        dx, dy = np.abs(np.diff(g, axis=2))[:, :-1, :], np.abs(np.diff(g, axis=1))[:, :, :-1]
        mm = m[:, :-1, :-1] & m[:, 1:, 1:] & m[:, :-1, 1:]
        feats = [(d * mm).sum((1, 2)) / np.maximum(mm.sum((1, 2)), 1) for d in (dx, dy)]
        return np.stack(feats, 1) / (g * m).sum((1, 2))[:, None] * m.sum((1, 2))[:, None]

    acc = _nearest_centroid_accuracy(tex(xtr, mask_tr), [e["composition"] for e in ent["train"]],
                                     tex(xva, mask_va), [e["composition"] for e in ent["validation"]])
    assert acc > 2.0 / len(MATERIALS), acc  # far above chance with two numbers per image

    # season -> palette: spring/summer images are lighter than fall/winter ones
    light = (xtr * mask_tr[..., None]).sum((1, 2, 3)) / mask_tr.sum((1, 2))
    ss = np.array([s.startswith("SS") for s in tr.products.season])
    assert light[ss].mean() > light[~ss].mean() + 20


def test_views_differ(smoke_data):
    """Products with three or more views exist, and their views are not copies of one image.

    An extra view equals the first when its random scale rounds to exactly 1 and it is not flipped
    (about 1 view in 75); the generator keeps that (its bytes are fixed), so the test bounds the rate."""
    ds = FashionGen(smoke_data["train"])
    multi = [rows for rows in ds.products.rows if len(rows) >= 3]
    assert len(multi) > len(ds.products) / 2  # 3 to 6 views with probability 0.75
    same_as_first = 0
    for rows in multi:
        imgs = [ds.image(r) for r in rows]
        differs = [not np.array_equal(imgs[0], im) for im in imgs[1:]]
        assert any(differs), rows  # never one image repeated
        same_as_first += len(differs) - sum(differs)
    assert same_as_first < 0.05 * sum(len(rows) - 1 for rows in multi)


def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), "--seed", "2", "--image-size", "32",
                 "--confounding", "0.3"]) == 0
    assert "train.h5" in capsys.readouterr().out
    ds = FashionGen(tmp_path / "d" / "validation.h5")
    assert ds.image_shape == (32, 32, 3) and len(ds) == 128
    g = json.loads((tmp_path / "d" / "ground_truth.json").read_text())
    assert g["generator"] == {"profile": "smoke", "seed": 2, "confounding": 0.3, "image_size": 32,
                              "n_train": 256, "n_val": 128}
    assert main(["synth", "--out", str(tmp_path / "e"), "--image-size", "5"]) == 2
    assert "image-size" in capsys.readouterr().err


def test_sizes_can_be_overridden(tmp_path):
    from eiclip_core.pipeline.synth_command import generate_profile_data

    paths = generate_profile_data(tmp_path, "smoke", seed=1, image_size=16, n_train=20, n_val=10)
    assert (len(FashionGen(paths["train"])), len(FashionGen(paths["validation"]))) == (20, 10)
    assert json.loads(paths["ground_truth"].read_text())["generator"] == {**SMOKE, "seed": 1, "image_size": 16,
                                                                          "n_train": 20, "n_val": 10}


def test_a_profile_draw_is_the_profile_settings_and_a_real_data_profile_has_none(tmp_path):
    from eiclip_core.pipeline.synth_command import profile_draw

    assert profile_draw("smoke") == SMOKE
    assert profile_draw("quick", seed=3, confounding=0.0) == dict(profile="quick", seed=3, confounding=0.0,
                                                                  image_size=64, n_train=3000, n_val=600)
    with pytest.raises(KitError, match="profile 'paper': uses real data, not generated data"):
        profile_draw("paper")
    with pytest.raises(KitError, match="profile 'nope': unknown profile"):
        profile_draw("nope")
    with pytest.raises(KitError, match="n_train=0, n_val=10: a generated data set needs products in both splits"):
        generate(tmp_path, **{**SMOKE, "n_train": 0, "n_val": 10})
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_load_ground_truth_reads_the_file_and_names_bad_ones(smoke_data, gt, tmp_path):
    assert load_ground_truth(smoke_data["ground_truth"]) == gt
    bad = {"missing.json": None, "broken.json": "{not json", "old.json": json.dumps({"version": 0, "splits": {}}),
           "list.json": "[1, 2]"}
    for name, content in bad.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(KitError, match=re.escape(str(path))):
            load_ground_truth(path)


def test_generate_unless_present_reuses_the_same_draw_only(tmp_path):
    settings = dict(profile="smoke", seed=1, confounding=0.5, image_size=16, n_train=20, n_val=10)
    assert generate_unless_present(tmp_path, **settings)
    written = _bytes({name: tmp_path / name for name in ("train.h5", "validation.h5", "ground_truth.json")})
    assert not generate_unless_present(tmp_path, **settings)
    assert generate_unless_present(tmp_path, **{**settings, "seed": 2})
    assert json.loads((tmp_path / "ground_truth.json").read_text())["generator"]["seed"] == 2
    assert generate_unless_present(tmp_path, **settings)
    assert _bytes({name: tmp_path / name for name in written}) == written



def test_validation_only_draw_is_the_full_draw_without_its_training_split(tmp_path):
    """The zero-shot harm reads only validation files: a validation-only draw writes the same
    validation.h5 bytes and validation ground truth as the full draw, no train.h5, and is reused
    only as a validation-only draw."""
    settings = dict(profile="smoke", seed=1, confounding=1.0, image_size=16, n_train=30, n_val=10)
    full, part = tmp_path / "full", tmp_path / "part"
    generate(full, **settings)
    assert generate_unless_present(part, **settings, validation_only=True)
    assert not (part / "train.h5").exists()
    assert (part / "validation.h5").read_bytes() == (full / "validation.h5").read_bytes()
    truth = {d: load_ground_truth(d / "ground_truth.json") for d in (full, part)}
    assert list(truth[part]["splits"]) == ["validation"]
    assert truth[part]["splits"]["validation"] == truth[full]["splits"]["validation"]
    assert truth[part]["ordinary_word_values"] == truth[full]["ordinary_word_values"]
    assert not generate_unless_present(part, **settings, validation_only=True)
    assert generate_unless_present(part, **settings)  # a full draw is not a validation-only one
    assert (part / "train.h5").read_bytes() == (full / "train.h5").read_bytes()

ROOT = Path(__file__).resolve().parents[1]


def _leftovers(folder):
    """Temporary files and folders of a synth run: atomic writes' .tmp files and generate's .partial folders."""
    return sorted(p.name for p in Path(folder).glob(".*") if p.name.endswith((".tmp", ".partial")))


def test_killed_synth_leaves_a_set_that_is_not_reused_and_is_cleaned_up(tmp_path, smoke_data):
    """SIGKILL `synth --seed 7` over a seed-0 set once the validation file is being
    written; the set must not be taken for the complete seed-0 draw, and the next run regenerates it
    and removes what the killed run left."""
    out = tmp_path / "q"
    assert generate_unless_present(out, **SMOKE)
    proc = subprocess.Popen([sys.executable, "-m", "eiclip_core.cli", "synth", "--out", str(out), "--profile",
                             "smoke", "--seed", "7"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("**/.validation.h5.*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, "synth ended before writing validation.h5"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _leftovers(out)  # the killed run's temporary file is still there
    assert generate_unless_present(out, **SMOKE)  # not reused: regenerated
    assert _leftovers(out) == []
    assert _bytes({k: out / p.name for k, p in smoke_data.items()}) == _bytes(smoke_data)
    assert not generate_unless_present(out, **SMOKE)  # now whole: reused


def test_a_changed_or_missing_file_makes_the_set_incomplete(tmp_path):
    settings = dict(profile="smoke", seed=1, confounding=0.5, image_size=16, n_train=20, n_val=10)
    assert generate_unless_present(tmp_path, **settings)
    stamp = (tmp_path / "train.h5").stat().st_mtime_ns
    with h5py.File(tmp_path / "validation.h5", "r+") as f:  # another file's bytes under the same name
        f["input_msrpUSD"][0] = -1.0
    assert generate_unless_present(tmp_path, **settings)
    assert (tmp_path / "train.h5").stat().st_mtime_ns == stamp  # unchanged bytes are kept as they were
    (tmp_path / "ground_truth.json").unlink()
    assert generate_unless_present(tmp_path, **settings)
    assert not generate_unless_present(tmp_path, **settings)


def _one_error_line(capsys) -> str:
    """The command's one error line, the last on stderr (a progress bar may have drawn itself first)."""
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert lines[-1].startswith("error: ") and [x for x in lines if x.startswith("error")] == lines[-1:], lines
    return lines[-1]


def test_synth_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """No space for the images (the free space is checked first: HDF5 can crash on a full disk), and no
    space for ground_truth.json (ENOSPC raised by the write itself, monkeypatched)."""
    import eiclip_core.synth.files as files

    out = tmp_path / "d"
    with monkeypatch.context() as m:
        m.setattr(files.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 5 << 20})())
        assert main(["synth", "--out", str(out)]) == 2
    assert re.fullmatch(rf"error: {out}/train\.h5: no space left on device \(needs about \d+ MiB, 5 MiB free\)",
                        _one_error_line(capsys))
    real_write_text = Path.write_text

    def full_disk(path, *args, **kwargs):
        if path.name.startswith(".ground_truth.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(["synth", "--out", str(out)]) == 2
    assert _one_error_line(capsys) == f"error: {out}/ground_truth.json: cannot write here: no space left on device"
    assert sorted(p.name for p in out.iterdir()) == []  # nothing half-written, no temporary file or folder


@pytest.mark.parametrize("case", ["out is a file", "out under a file", "read-only out", "negative seed"])
def test_synth_bad_out_or_seed_is_one_line_exit_2(case, tmp_path, read_only, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    out, seed, problem = {
        "out is a file": (a_file, "0", f"{a_file}: cannot write here: exists and is not a folder"),
        "out under a file": (a_file / "sub", "0", f"{a_file}/sub: cannot write here: a part of this path is a file"),
        "read-only out": (tmp_path / "ro", "0", f"{tmp_path}/ro: cannot write here: read-only file system"),
        "negative seed": (tmp_path / "d", "-1", "--seed -1: must be 0 or more"),
    }[case]
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    assert main(["synth", "--out", str(out), "--seed", seed]) == 2
    assert _one_error_line(capsys).startswith(f"error: {problem}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ro"] and not list((tmp_path / "ro").iterdir())
