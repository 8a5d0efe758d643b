"""Bad input: every broken file gives one clear line naming file and key, never a bare traceback.

The reader (`FashionGen`) raises a KitError, `check_file` lists the problems, and `eiclip check-data`
exits 2 (bad input). Property-based tests generate malformed files and strings; hostile files (memory
bombs, corrupt chunks and metadata, FIFOs, unreadable files) are in test_hostile_files.py.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eiclip_core.cli import main
from eiclip_core.data import FashionGen
from eiclip_core.data.check import check_file
from eiclip_core.data.fashiongen import COLUMNS, REQUIRED_KEYS, STRING_KEYS
from eiclip_core.errors import KitError


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


# (case name, builder kwargs, words the message must contain)
BAD = {
    "missing key": (dict(drop=("input_description",)), ["'input_description'", "missing"]),
    "missing image": (dict(drop=("input_image",)), ["'input_image'", "missing"]),
    "wrong dtype": (dict(replace={"input_name": np.zeros((3, 1), np.float64)}), ["'input_name'", "dtype"]),
    "wrong id dtype": (dict(replace={"input_productID": np.zeros((3, 1), np.float32)}), ["'input_productID'", "dtype"]),
    "wrong shape": (dict(replace={"input_brand": np.array([[b"A", b"B"]] * 3)}), ["'input_brand'", "shape"]),
    "short column": (dict(replace={"index": np.arange(2).reshape(-1, 1)}), ["'index'", "shape"]),
    "grey images": (dict(replace={"input_image": np.zeros((3, 8, 8), np.uint8)}), ["'input_image'", "shape"]),
    "float images": (dict(replace={"input_image": np.zeros((3, 8, 8, 3), np.float32)}), ["'input_image'", "dtype"]),
    "split product": (dict(ids=[7, 8, 7]), ["'input_productID'", "product 7", "split"]),
    "empty text": (dict(texts=[(b"  ", b""), (b"Shirt", b"Nice.")]), ["'input_name'", "empty text"]),
    "binary string": (dict(texts=[(b"Shirt\x01\x02", b"x"), (b"Shirt", b"Nice.")]), ["'input_name'", "binary"]),
    "nan price": (dict(replace={"input_msrpUSD": np.array([[1.0], [np.nan], [2.0]])}), ["'input_msrpUSD'", "NaN"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_file_gives_one_clear_line(case, tmp_path, write_fashiongen_h5, capsys):
    kwargs, words = BAD[case]
    path = write_fashiongen_h5(tmp_path / "bad.h5", views=(1, 2), **kwargs)
    with pytest.raises(KitError) as err:
        FashionGen(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for w in words:
        assert w in message
    lines = check_file(path)
    assert lines and all(line.startswith(f"{path}: ") and "\n" not in line for line in lines)
    assert any(all(w in line for w in words) for line in lines)
    assert main(["check-data", str(path)]) == 2
    out = capsys.readouterr().out
    assert all(w in out for w in words) and "Traceback" not in out and "OK " not in out


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 0.99])
def test_truncated_file(fraction, tmp_path, write_fashiongen_h5, capsys):
    path = _truncate(write_fashiongen_h5(tmp_path / "cut.h5", views=(3, 3, 3), size=32), fraction)
    with pytest.raises(KitError, match=r"cut\.h5: .*(unreadable|truncated)"):
        FashionGen(path)
    assert len(check_file(path)) == 1
    assert main(["check-data", str(path)]) == 2
    assert "truncated" in capsys.readouterr().out


def test_missing_file_and_directory(tmp_path, capsys):
    with pytest.raises(KitError, match=r"nope\.h5: file not found"):
        FashionGen(tmp_path / "nope.h5")
    with pytest.raises(KitError, match="is a directory"):
        FashionGen(tmp_path)
    assert main(["check-data", str(tmp_path / "nope.h5")]) == 2


def test_all_problems_are_listed(tmp_path, write_fashiongen_h5):
    path = write_fashiongen_h5(tmp_path / "many.h5", views=(1, 2), drop=("input_season", "index_2"),
                               replace={"input_name": np.zeros((3, 1), np.int8)})
    lines = check_file(path)
    assert len(lines) == 3
    with pytest.raises(KitError, match=r"and 2 more; run `eiclip check-data"):
        FashionGen(path)


def test_check_data_ok_on_good_files(smoke_data, tmp_path, write_fashiongen_h5, capsys):
    quirks = write_fashiongen_h5(tmp_path / "quirks.h5")
    assert check_file(quirks) == []
    code = main(["check-data", str(smoke_data["train"]), str(smoke_data["validation"]), str(quirks)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("OK ") == 3 and "256 products" in out and "21 images of 8x8" in out


def test_check_data_reports_each_file(smoke_data, tmp_path, write_fashiongen_h5, capsys):
    bad = write_fashiongen_h5(tmp_path / "bad.h5", views=(1, 2), drop=("input_pose",))
    assert main(["check-data", str(smoke_data["validation"]), str(bad)]) == 2
    out = capsys.readouterr().out
    assert "OK " in out and "bad.h5: key 'input_pose' missing" in out and "1 of 2 file(s)" in out


# ---------------------------------------------------------------------------------------------
# property-based: malformed files load or raise KitError, nothing else; check-data agrees

_BYTES = st.binary(max_size=24)
_DTYPES = st.sampled_from([np.uint8, np.int32, np.int64, np.float32, np.float64, "S5", bool])


@st.composite
def _malformed(draw):
    views = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    n = sum(views)
    kwargs = {"views": tuple(views), "size": draw(st.sampled_from([1, 4])), "extra": draw(st.booleans())}
    kwargs["drop"] = tuple(draw(st.lists(st.sampled_from(REQUIRED_KEYS), max_size=2, unique=True)))
    if draw(st.booleans()):
        kwargs["ids"] = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    if draw(st.booleans()):
        kwargs["texts"] = [(draw(_BYTES), draw(_BYTES)) for _ in views]
    replace = {}
    for key in draw(st.lists(st.sampled_from(REQUIRED_KEYS), max_size=2, unique=True)):
        rows = draw(st.sampled_from([n, n - 1, n + 1, 0]))
        shape = draw(st.sampled_from([(rows,), (rows, 1), (rows, 2), (rows, 1, 1), (rows, 4, 4, 3), ()]))
        dtype = draw(_DTYPES)
        replace[key] = np.zeros(shape, dtype)
    if draw(st.booleans()):
        replace["input_msrpUSD"] = np.array(draw(st.lists(st.floats(allow_nan=True), min_size=n, max_size=n)),
                                            np.float64).reshape(-1, 1)
    kwargs["replace"] = replace
    return kwargs, draw(st.sampled_from([None, 0.3, 0.9]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_malformed())
def test_malformed_files_load_or_raise_kiterror(case, tmp_path, write_fashiongen_h5):
    kwargs, cut = case
    path = tmp_path / "prop.h5"
    path.unlink(missing_ok=True)
    write_fashiongen_h5(path, **kwargs)
    if cut is not None:
        _truncate(path, cut)
    problems = check_file(path)
    try:
        ds = FashionGen(path)
    except KitError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        assert any(str(e).startswith(p) for p in problems)  # check-data lists what the reader refuses
        return
    # the reader loaded: check-data may only object to columns the reader does not use
    unused = [k for k in STRING_KEYS if k not in COLUMNS.values()] + ["'index'", "'index_2'"]
    assert all(any(k in p for k in unused) for p in problems), problems
    assert sum(len(r) for r in ds.products.rows) == ds.n_rows
    ds.image(ds.n_rows - 1)
    if not check_file(path, full=True):  # the promise of --full: every image row of a file that passes loads
        assert all(ds.image(row).shape == ds.image_shape for row in range(ds.n_rows))
    ds.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.binary(min_size=1, max_size=40), description=st.binary(max_size=40))
def test_any_text_bytes_decode_as_latin1_or_are_named(name, description, tmp_path, write_fashiongen_h5):
    path = tmp_path / "text.h5"
    path.unlink(missing_ok=True)
    write_fashiongen_h5(path, views=(2,), texts=[(name, description)])
    try:
        ds = FashionGen(path)
    except KitError as e:
        assert "text.h5: key" in str(e) and "'input_" in str(e)
        assert "binary" in str(e) or "empty text" in str(e)
        return
    assert ds.products.name[0] == name.rstrip(b"\x00").decode("latin-1").strip()
    assert ds.products.description[0] == description.rstrip(b"\x00").decode("latin-1").strip()


def test_stray_control_character_in_long_text_is_tolerated(tmp_path, write_fashiongen_h5):
    """Scraped descriptions may carry a stray control character; only binary junk is refused."""
    desc = b"Slim-fit shirt in red cotton.\x0b Tonal stitching. Button closure at front."
    ds = FashionGen(write_fashiongen_h5(tmp_path / "stray.h5", views=(1,), texts=[(b"Shirt", desc)]))
    assert ds.products.description[0] == desc.decode("latin-1")
