"""The environment's two descriptions (pip constraints and conda's environment.yml) must not drift."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+).*", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _environment_yml_pip_lines():
    """The entries of the `- pip:` list in environment.yml (a flat YAML list; no YAML library needed)."""
    lines, inside = [], False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"\s*- pip:\s*$", raw):
            inside = True
        elif inside and re.match(r"\s{6,}- ", raw):
            lines.append(raw.split("- ", 1)[1])
        elif inside and raw.strip() and not raw.strip().startswith("#"):
            inside = False
    return lines


def test_environment_yml_pins_match_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    env_lines = _environment_yml_pip_lines()
    env = _pins(env_lines)
    assert {"torch", "torchvision"} <= set(env), "environment.yml must pin torch and torchvision"
    for name, version in env.items():
        assert constraints.get(name) == version, f"{name}: environment.yml {version} vs constraints.txt {constraints.get(name)}"
    assert "-c constraints.txt" in env_lines and any(l.startswith("-e .") for l in env_lines)
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_pyproject_torch_pins_match_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = _pins(deps)
    for name in ("torch", "torchvision"):
        assert pinned[name] == constraints[name] == {"torch": "2.14.1", "torchvision": "0.29.1"}[name]
