"""Every reference to the kit's documents resolves, and the documents name what the code has.

Code, notebooks and READMEs cite the documents under docs/ by bare name ("METHOD.md section 5",
"sec. 3-7", "sections 1, 3 to 6", "METHOD section-8", 'FASHIONGEN.md "Published numbers"',
"CONTRACTS.md"). A reference resolves when the named file exists (docs/<name>, or the project
root for README.md) and the section is a heading of it: a number is a heading "## N. ...", a quoted
name the start of a heading. A section number without a document name belongs to METHOD.md, the
only document with numbered sections.
"""
import dataclasses
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THIS = Path(__file__).resolve()  # its examples are not references, so the scan skips this file

DOC = re.compile(r"\b(?P<name>[A-Z][A-Z0-9_]*\.md)\b|\bMETHOD\b(?=[\s-]*sections?\b)")
KEYWORD = re.compile(r"\b(?:sections?|sec\.)[\s-]*(?=\d)", re.IGNORECASE)
TITLE = re.compile(r"[\s,]*(?:sections?\s*)?\"(?P<title>[A-Za-z][^\"\n]*)\"")
ATTACHED = re.compile(r"(?:" + DOC.pattern + r")[\s,(]*$")


@dataclasses.dataclass(frozen=True)
class Reference:
    where: str  # file:line, or notebook:cell
    doc: str  # file name, e.g. "METHOD.md"
    section: object = None  # int, a quoted heading name, or None (the whole document)


def section_numbers(text: str, start: int) -> list[int]:
    """The numbers of a section list starting at `start`: "3-7", "1, 3 to 6", "6 and 7", "8, 2 seeds" -> 8."""
    number = re.compile(r"(\d+)(?:\s*(?:-|–|to)\s*(\d+))?")
    separator = re.compile(r"\s*(,\s*and|,|and)\s*(?=\d)")
    out, pos, sep = [], start, None
    while m := number.match(text, pos):
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if sep == "," and m.group(2) is None and re.match(r"\s+(?!(?:to|and)\b)[a-z]", text[m.end():]):
            break  # "section 8, 2 seeds each": the 2 counts seeds, not sections
        out += range(lo, hi + 1)
        s = separator.match(text, m.end())
        if not s:
            break
        sep, pos = s.group(1), s.end()
    return out


def references(text: str, where) -> list[Reference]:
    """References in one unit of text; `where(offset)` names the place of a match."""
    out = []
    for m in DOC.finditer(text):
        name = m.group("name") or "METHOD.md"
        t = TITLE.match(text, m.end())
        out.append(Reference(where(m.start()), name, t.group("title") if t else None))
    for m in KEYWORD.finditer(text):
        before = ATTACHED.search(text[max(0, m.start() - 60):m.start()])
        name = (before.group("name") or "METHOD.md") if before else "METHOD.md"
        out += [Reference(where(m.start()), name, n) for n in section_numbers(text, m.end())]
    return out


def _python_text(path: Path) -> str:
    # comment markers at line starts dropped, so a reference broken across comment lines is one
    return re.sub(r"(?m)^[ \t]*#+", " ", path.read_text(encoding="utf-8"))


def scanned_references() -> list[Reference]:
    """Every reference in the package, notebooks, tests, bench scripts, READMEs and docs."""
    units = []  # (label, text)
    for folder in ("eiclip_core", "tests", "bench"):
        units += [(p, _python_text(p)) for p in sorted((ROOT / folder).rglob("*.py")) if p.resolve() != THIS]
    units += [(p, p.read_text(encoding="utf-8"))
              for p in [ROOT / "README.md", ROOT / "data" / "README.md", *sorted(DOCS.glob("*.md"))] if p.exists()]
    out = []
    for path, text in units:
        rel = path.relative_to(ROOT)
        out += references(text, lambda i, rel=rel, text=text: f"{rel}:{text.count(chr(10), 0, i) + 1}")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            source = "".join(cell["source"])
            if cell["cell_type"] == "code":
                source = re.sub(r"(?m)^[ \t]*#+", " ", source)
            out += references(source, lambda i, where=f"{nb.relative_to(ROOT)}:cell {k}": where)
    return out


def document_path(name: str) -> Path:
    return DOCS / name if (DOCS / name).exists() or name != "README.md" else ROOT / name


def headings(path: Path) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"(?m)^#{1,6}\s+(.+)$", path.read_text(encoding="utf-8"))]


def resolves(ref: Reference) -> bool:
    path = document_path(ref.doc)
    if not path.exists():
        return False
    if ref.section is None:
        return True
    heads = headings(path)
    if isinstance(ref.section, int):
        return any(re.match(rf"{ref.section}\.\s", h) for h in heads)
    bare = [re.sub(r"^\d+\.\s*", "", h).lower() for h in heads]
    return any(h.startswith(ref.section.lower()) for h in bare)


def test_the_scanner_reads_every_form_of_reference():
    text = ('x (METHOD.md sections 1, 3 to 6). y  # sec. 3-7 switches\n'
            'METHOD section 8, 2 seeds each; the section-9 recipe; METHOD section-8 variants;\n'
            '(METHOD.md\n    section 7: one sample) sections 6 and 7\n\nThe rows; sections 4-5)\n'
            'FASHIONGEN.md "Evaluation protocols", FASHIONGEN.md, "Published numbers"; see CONTRACTS.md.\n'
            'README.md, section "Method". CONTRACTS.md section 2.\n'
            'not references: viz.section_gates(x), METHODS, 5 seconds, Table 4, open("FASHIONGEN.md"), "x"\n')
    found = [(r.doc, r.section) for r in references(text, lambda i: "t")]
    m = "METHOD.md"
    assert found == [
        (m, None), (m, None), (m, None), (m, None), ("FASHIONGEN.md", "Evaluation protocols"),
        ("FASHIONGEN.md", "Published numbers"), ("CONTRACTS.md", None), ("README.md", "Method"),
        ("CONTRACTS.md", None), ("FASHIONGEN.md", None),
        (m, 1), (m, 3), (m, 4), (m, 5), (m, 6), (m, 3), (m, 4), (m, 5), (m, 6), (m, 7), (m, 8), (m, 9), (m, 8),
        (m, 7), (m, 6), (m, 7), (m, 4), (m, 5), ("CONTRACTS.md", 2)]


def test_every_reference_names_an_existing_document_and_section():
    refs = scanned_references()
    places = {r.where.split("/")[0].split(":")[0] for r in refs}
    # the scan reaches the package, the notebooks and the README (a broken scan would pass vacuously)
    assert {"eiclip_core", "notebooks", "README.md"} <= places, places
    assert {"METHOD.md", "FASHIONGEN.md", "CONTRACTS.md"} <= {r.doc for r in refs}
    dead = [f"{r.where}: {r.doc}" + (f" section {r.section!r}" if r.section is not None else "")
            for r in refs if not resolves(r)]
    assert not dead, "references that lead nowhere:\n" + "\n".join(dead)


def test_markdown_links_point_to_files():
    for md in [ROOT / "README.md", ROOT / "data" / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+:", target):
                assert (md.parent / target).exists(), f"{md.relative_to(ROOT)}: link to missing {target}"


def test_method_keeps_its_numbering_and_names_every_switch_and_row():
    from eiclip_core.model.config import ROWS, EIConfig

    text = (DOCS / "METHOD.md").read_text(encoding="utf-8")
    numbers = [int(m.group(1)) for m in re.finditer(r"(?m)^## (\d+)\. ", text)]
    assert numbers == list(range(1, 12)), "sections 1 to 11, in order, as the code cites them"
    missing = [f.name for f in dataclasses.fields(EIConfig) if f"`EIConfig.{f.name}`" not in text]
    assert not missing, f"EIConfig switches not described in docs/METHOD.md: {missing}"
    rows = text.split("## 8. ", 1)[1].split("\n## ", 1)[0]
    assert not [r for r in ROWS if f"`{r}`" not in rows], "every row of model.ROWS belongs in section 8"


def test_fashiongen_document_lists_exactly_the_keys_the_reader_requires():
    from eiclip_core.data.fashiongen import REQUIRED_KEYS

    text = (DOCS / "FASHIONGEN.md").read_text(encoding="utf-8")
    table = text.split("## HDF5 keys", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"(?m)^\| (\w+) \|", table)
    assert sorted(set(documented) - {"key"}) == sorted(REQUIRED_KEYS)


@pytest.mark.parametrize("path", ["data/<profile>/entities.json", "data/<profile>/ground_truth.json",
                                  "data/<profile>/runs/<row>/seed<k>/", "data/<profile>/cache/",
                                  "fashiongen_256_256_<split>.h5"])
def test_contracts_describe_the_paths_layout_builds(path):
    from eiclip_core import layout

    built = {"data/<profile>/entities.json": layout.entities_file("data/<profile>"),
             "data/<profile>/ground_truth.json": layout.ground_truth_file("data/<profile>"),
             "data/<profile>/runs/<row>/seed<k>/": layout.run_dir("data/<profile>", "<row>", "<k>"),
             "data/<profile>/cache/": layout.cache_dir("data/<profile>"),
             "fashiongen_256_256_<split>.h5": Path(layout.REAL_FILE.format(split="<split>"))}[path]
    assert path.rstrip("/") == built.as_posix()  # the documented path is the one the code builds
    assert path in (DOCS / "CONTRACTS.md").read_text(encoding="utf-8")


def test_contracts_name_every_top_level_key_of_results_json():
    from eiclip_core.evaluation.evaluate import Evaluation

    evaluation = Evaluation(profile="smoke", records=[], breakdown=[], summary=None, breakdown_summary=None,
                            embeddings={}, data_path=Path("validation.h5"), published=False)
    text = (DOCS / "CONTRACTS.md").read_text(encoding="utf-8")
    assert not [k for k in evaluation.to_json() if f'"{k}"' not in text]
