"""A product table (CSV, JSON Lines or Parquet) read through a mapping into products, with every bad row named.

A mapping says which column(s) of the table hold each Fashion-Gen field (MAPPING.json, or a preset
in presets.py). Its format, a JSON object:

    {"product_id": "sku",                        optional; without it each row is one product
     "name": "title", "description": ["summary", "details"],   a column, or columns joined in order
     "brand": "brand", "category": "family", "subcategory": "type", "composition": "material",
     "season": "season", "gender": "gender", "department": "department",   all optional
     "image": "image_path",                      required; one column or several
     "image_separator": "|",                     several paths in one cell (default "|"); JSON and
                                                 Parquet list cells need none
     "language": "en_US",                        for cells of language-tagged values
                                                 ([{"language_tag": "en_US", "value": ...}]):
                                                 keep this tag, else the same language (en_*)
     "split_group": "model_code"}                optional; products sharing it stay in one split

A field not mapped is empty in the files, never invented. Rows sharing a product id are one product
(one row per image is fine) and must agree on every text field. Rows are numbered from 1 in table
order (the header is not a row). A problem of a product is a problem of all its rows (`BadRow`).
"""
import csv
import gzip
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eiclip_core.errors import KitError
from eiclip_core.io import read_json

FIELDS = ("name", "description", "brand", "category", "subcategory", "composition", "season", "gender",
          "department")
SENTENCE_FIELDS = ("description", "composition")  # several parts are joined as sentences
_OPTIONS = ("product_id", "image", "image_separator", "language", "split_group")
_SURROGATE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8 (decoded with surrogateescape)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


@dataclass(frozen=True)
class Mapping:
    """Which table columns become which Fashion-Gen field; see the module docstring for the JSON form."""
    image: tuple  # columns holding image paths
    fields: dict  # Fashion-Gen field -> tuple of columns
    product_id: str | None = None
    image_separator: str = "|"
    language: str = ""
    split_group: str | None = None
    source: str = "mapping"  # the mapping file or preset, named in messages

    def columns(self) -> dict:
        """column -> the mapping entry that names it, for the missing-column check."""
        named = {c: f for f, cols in self.fields.items() for c in cols}
        named.update({c: "image" for c in self.image})
        named.update({c: k for k in ("product_id", "split_group") if (c := getattr(self, k))})
        return named


@dataclass
class Product:
    """One product of the table: its rows, text (latin-1, after the text policy) and image files."""
    source_id: str
    rows: list  # 1-based table rows
    text: dict  # field -> str ("" when unmapped or empty)
    images: list  # absolute Paths, in table order, no repeats
    group: str  # split group key
    image_rows: list = field(default_factory=list)  # the row each image was first named on
    product_id: int = 0  # id in the written files


@dataclass(frozen=True)
class BadRow:
    row: int
    product: str
    problem: str
    primary: bool = True  # False: listed because another row of its product is bad


def _as_columns(value, key: str, where: str) -> tuple:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise KitError(f"{where}: '{key}' must be a column name or a list of column names, not {value!r}")


def load_mapping(path) -> Mapping:
    """Read and check MAPPING.json (format in the module docstring)."""
    return mapping_from_dict(read_json(path, "mapping"), str(path))


def mapping_from_dict(spec, where: str) -> Mapping:
    if not isinstance(spec, dict):
        raise KitError(f"{where}: a mapping is a JSON object of field -> column")
    unknown = sorted(set(spec) - set(FIELDS) - set(_OPTIONS))
    if unknown:
        raise KitError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(FIELDS + _OPTIONS)})")
    if "image" not in spec:
        raise KitError(f"{where}: 'image' is required (the column of image paths)")
    if not ({"name", "description"} & set(spec)):
        raise KitError(f"{where}: map 'name' or 'description' (the text of a product)")
    for key in ("product_id", "split_group", "image_separator", "language"):
        if key in spec and not (isinstance(spec[key], str) and (spec[key] or key == "language")):
            raise KitError(f"{where}: '{key}' must be a non-empty string, not {spec[key]!r}")
    return Mapping(image=_as_columns(spec["image"], "image", where),
                   fields={f: _as_columns(spec[f], f, where) for f in FIELDS if f in spec},
                   product_id=spec.get("product_id"), image_separator=spec.get("image_separator", "|"),
                   language=spec.get("language", ""), split_group=spec.get("split_group"), source=where)


# ------------------------------------------------------------------------------------------ reading


def _bytes_of(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise KitError(f"{path}: unreadable gzip file ({e})") from None
    return raw


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    # bytes that are not UTF-8 are kept as surrogates, so that the row holding them can be named
    text = _bytes_of(path).decode("utf-8-sig", errors="surrogateescape")
    # lines end at "\n" only: str.splitlines() also splits at U+2028, U+0085..., which JSON strings may hold raw
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise KitError(f"{path}: row {len(records) + 1} (line {i}): not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise KitError(f"{path}: row {len(records) + 1} (line {i}): a JSON object was expected")
        records.append(rec)
    return pd.DataFrame.from_records(records)


def _read_csv(path: Path, raw: bytes) -> pd.DataFrame:
    """pandas' reading, refusing what it reads silently wrong: a header naming a column twice (read as
    'title' and 'title.1': a mapping naming 'title' gets the first), and rows one field longer than the
    header (read with their first field as an index: every column shifted)."""
    table = pd.read_csv(io.BytesIO(raw), dtype=object, keep_default_na=False, encoding="utf-8-sig",
                        encoding_errors="surrogateescape")
    header = next(csv.reader(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", errors="surrogateescape",
                                              newline="")), [])
    twice = next((name for k, name in enumerate(header) if name and name in header[:k]), None)
    if twice is not None:
        raise KitError(f"{path}: the header names column '{twice}' twice; rename one")
    if not isinstance(table.index, pd.RangeIndex):
        raise KitError(f"{path}: the rows have one more field than the header ({len(header)} columns): a "
                       "separator at the end of every row? remove it, or name the last column")
    return table


def read_table(path) -> pd.DataFrame:
    """The table as a DataFrame of plain Python cells (CSV cells are strings, "" when empty).

    Format by suffix: .csv, .jsonl / .json (one object per line), .parquet; .gz allowed for the
    first two. A row holding bytes that are not UTF-8 is reported by `not_utf8_rows`.
    """
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: table not found")
    kind = path.name.lower().removesuffix(".gz").rsplit(".", 1)[-1]
    try:
        if kind == "csv":
            table = _read_csv(path, _bytes_of(path))
        elif kind in ("jsonl", "json", "ndjson"):
            table = _read_jsonl(path)
        elif kind == "parquet":
            table = pd.read_parquet(path)  # through pyarrow, a dependency of the kit
        else:
            raise KitError(f"{path}: unknown table format (use .csv, .jsonl or .parquet)")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as e:
        raise KitError(f"{path}: unreadable table ({str(e).splitlines()[0]})") from None
    bad_header = [c for c in table.columns if _SURROGATE.search(str(c))]
    if bad_header:
        raise KitError(f"{path}: the header is not UTF-8 (save the table as UTF-8)")
    if table.empty:
        raise KitError(f"{path}: the table has no rows")
    return table.reset_index(drop=True)


def not_utf8_rows(table: pd.DataFrame) -> dict:
    """row index (0-based) -> problem, for rows holding bytes that are not UTF-8."""
    found = {}
    for col in table.columns:
        cells = table[col]
        if pd.api.types.is_numeric_dtype(cells.dtype) or pd.api.types.is_bool_dtype(cells.dtype):
            continue
        hit = cells.map(lambda v: isinstance(v, str) and _SURROGATE.search(v) is not None)
        for i in np.flatnonzero(hit.to_numpy(dtype=bool)):
            if i not in found:
                byte = ord(_SURROGATE.search(cells.iat[i]).group()) - 0xDC00
                found[int(i)] = (f"not UTF-8 (byte 0x{byte:02x} in column '{col}'); save the table as UTF-8")
    return found


def check_columns(table: pd.DataFrame, mapping: Mapping, table_path) -> None:
    """A mapping that names a column the table lacks is a KitError naming both."""
    for col, entry in mapping.columns().items():
        if col not in table.columns:
            have = ", ".join(map(str, table.columns[:12])) + (", ..." if len(table.columns) > 12 else "")
            raise KitError(f"{mapping.source}: '{entry}' names column '{col}', which {table_path} lacks "
                           f"(its columns: {have})")


# ------------------------------------------------------------------------------------------- cells


def _tagged(items: list, language: str) -> list:
    """Values of language-tagged dicts: the exact tag, else the same language, untagged always."""
    untagged = [d["value"] for d in items if "language_tag" not in d]
    if not language:
        return untagged + [d["value"] for d in items if "language_tag" in d]
    tags = [str(d.get("language_tag", "")) for d in items]
    same = [t for t in tags if t.split("_")[0] == language.split("_")[0]]
    chosen = language if language in tags else (same[0] if same else None)
    return untagged + [d["value"] for d, t in zip(items, tags) if chosen and t == chosen]


class CellError(ValueError):
    """A cell holding what the kit does not read as text (see cell_values)."""


def cell_values(value, language: str = "") -> list:
    """The strings in one cell: a string, a number, a list, or language-tagged {"value": ...} dicts.

    CellError for a dict without a "value" key and for a map (Parquet map cells arrive as lists of
    (key, value) tuples): read as text they would give nothing, or keys run into values."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (dict, list, tuple, np.ndarray)):
        items = [value] if isinstance(value, dict) else list(value)
        if any(isinstance(v, tuple) for v in items):
            raise CellError(f"holds a map ({_short(value)}); maps are refused: the kit reads text, lists of "
                            "text and {'value': ...} structs")
        if any(isinstance(v, dict) and "value" not in v for v in items):
            raise CellError(f"holds a struct without a 'value' key ({_short(value)}), which is refused: the kit "
                            "reads text, lists of text and {'value': ...} structs (language-tagged)")
        dicts = [v for v in items if isinstance(v, dict)]
        plain = [v for v in items if not isinstance(v, dict)]
        return [s for v in plain + _tagged(dicts, language) for s in cell_values(v)]
    text = str(value).strip()
    return [text] if text else []


def _short(value) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def escape_not_utf8(text: str) -> str:
    """`text` with each byte that was not UTF-8 (kept as a surrogate) written \\xNN: savable as UTF-8."""
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def join_parts(parts: list, sentences: bool) -> str:
    """Parts of one field: words joined by a space, or sentences each ended by a full stop."""
    if sentences and len(parts) > 1:
        parts = [p if p[-1] in ".!?;:" else p + "." for p in parts]
    return " ".join(parts)


def image_paths(value, separator: str) -> list:
    """Paths in an image cell: a string with separators, or a list."""
    return [p.strip() for v in cell_values(value) for p in v.split(separator) if p.strip()]


def resolve_image(images_dir: Path, path: str, root: str | None = None) -> tuple:
    """(absolute Path, "") for an image file inside images_dir, or (None, problem).

    The check is lexical ('..' and absolute paths are resolved without following symbolic links), so
    a linked folder inside the images folder is fine and '../x.jpg' never is.
    """
    if _URL.match(path):
        return None, f"image '{path}' is a URL (download the images and give their paths)"
    root = root or os.path.abspath(images_dir)
    full = os.path.normpath(os.path.join(root, path))
    if not full.startswith(root.rstrip(os.sep) + os.sep):
        return None, f"image path '{path}' escapes the images folder {images_dir}"
    if not os.path.isfile(full):
        return None, f"image file not found: {images_dir / path}"
    return Path(full), ""


# ----------------------------------------------------------------------------------------- products


@dataclass
class Extracted:
    """What a table yields through a mapping: products (table order) and the bad rows found so far."""
    products: list = field(default_factory=list)
    bad: list = field(default_factory=list)  # BadRow, one per row of each bad product


def _cell(table, column: str, i: int, read=cell_values, *args) -> list:
    """read(the cell of row index i in `column`, *args); a CellError names the row and the column."""
    try:
        return read(table[column].iat[i], *args)
    except CellError as e:
        raise CellError(f"row {i + 1}, column '{column}' {e}") from None


def _row_record(table, i, mapping, policy) -> tuple:
    text = {}
    for f, cols in mapping.fields.items():
        parts = [s for c in cols for s in _cell(table, c, i, cell_values, mapping.language)]
        text[f] = policy(join_parts(parts, f in SENTENCE_FIELDS))
    paths = [p for c in mapping.image for p in _cell(table, c, i, image_paths, mapping.image_separator)]
    return text, paths


def _merge_problem(product: Product, text: dict, row: int) -> str:
    for f, v in text.items():
        if v != product.text[f]:
            short = lambda s: repr(s if len(s) <= 40 else s[:37] + "...")  # noqa: E731
            return (f"product id '{product.source_id}' repeats row {product.rows[0]} with another {f} "
                    f"({short(v)} here, {short(product.text[f])} there)")
    return ""


def extract_products(table: pd.DataFrame, mapping: Mapping, images_dir: Path, policy,
                     row_problems: dict | None = None) -> Extracted:
    """Group rows into products and check each: ids, conflicts, text, image paths.

    `row_problems` (0-based row -> problem) marks rows already known to be bad (not UTF-8, an image
    id a preset could not resolve); their products are bad too.
    """
    from tqdm.auto import tqdm

    row_problems = dict(row_problems or {})
    root = os.path.abspath(images_dir)
    n_rows, table = len(table), dict(table.items())  # column -> Series: a frame lookup per cell is far slower
    by_id, problems = {}, {}  # source id -> Product; source id -> (row, problem) of its first problem
    for i in tqdm(range(n_rows), desc="check rows", unit="row", leave=False):
        row = i + 1
        pid = str(row) if mapping.product_id is None else " ".join(_cell(table, mapping.product_id, i))
        text, paths = _row_record(table, i, mapping, policy)
        if not pid:
            pid = f"(row {row})"
            row_problems.setdefault(i, f"the product id ('{mapping.product_id}') is empty")
        group = pid if mapping.split_group is None else " ".join(_cell(table, mapping.split_group, i))
        product = by_id.get(pid)
        if product is None:
            product = by_id[pid] = Product(pid, [], text, [], group or pid)
        elif pid not in problems and (clash := _merge_problem(product, text, row)):
            problems[pid] = (row, clash)
        product.rows.append(row)
        for p in paths:
            full, problem = resolve_image(images_dir, p, root)
            if problem and pid not in problems:
                problems[pid] = (row, problem)
            elif full is not None and full not in product.images:
                product.images.append(full)
                product.image_rows.append(row)
        if i in row_problems and pid not in problems:
            problems[pid] = (row, row_problems[i])
    out = Extracted()
    for pid, product in by_id.items():
        if pid not in problems and not product.images:
            problems[pid] = (product.rows[0], f"no image path (column {', '.join(mapping.image)})")
        if pid not in problems and not (product.text.get("name") or product.text.get("description")):
            lang = f" in language {mapping.language}" if mapping.language else ""
            problems[pid] = (product.rows[0], f"name and description are both empty{lang}")
        if pid in problems:
            out.bad += bad_rows(product, *problems[pid])
        else:
            out.products.append(product)
    return out


def bad_rows(product: Product, row: int, problem: str) -> list:
    """The BadRows of a bad product: the row the problem was met on first, then its other rows."""
    rows = [row] + [r for r in product.rows if r != row]
    return [BadRow(r, product.source_id, problem if r == row else f"same product as row {row}: {problem}", r == row)
            for r in rows]


def assign_product_ids(products: list) -> str:
    """Set product_id: the source id when every id is a plain number that fits, else 1, 2, ... in
    table order. Returns the policy applied, for the report."""
    ids = [p.source_id for p in products]
    # ASCII digits only: str.isdigit() also accepts "³", which int() refuses
    numeric = all(s.isascii() and s.isdigit() and len(s) <= 18 for s in ids) and len({int(s) for s in ids}) == len(ids)
    for k, p in enumerate(products, 1):
        p.product_id = int(p.source_id) if numeric else k
    return "source ids kept" if numeric else "numbered 1, 2, ... in table order (source ids in products.csv)"
