"""The environment's descriptions must not drift: constraints.txt (the exact versions), environment.yml,
pyproject.toml and the README agree on the pins, and the tests run in the environment they describe."""
import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINNED = ("torch", "torchvision")  # the pins the numbers depend on (CUDA builds that also run on the CPU)


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


def _constraint_pins() -> dict:
    pins = _pins((ROOT / "constraints.txt").read_text().splitlines())
    assert set(PINNED) <= set(pins), "constraints.txt must pin torch and torchvision"
    return pins


def test_environment_yml_pins_match_constraints():
    constraints = _constraint_pins()
    env_lines = _environment_yml_pip_lines()
    env = _pins(env_lines)
    assert set(PINNED) <= set(env), "environment.yml must pin torch and torchvision"
    for name, version in env.items():
        assert constraints.get(name) == version, f"{name}: environment.yml {version} vs constraints.txt {constraints.get(name)}"
    assert "-c constraints.txt" in env_lines and any(l.startswith("-e .") for l in env_lines)
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_pyproject_pins_match_constraints():
    """Every exact pin of the package's dependencies is the version of constraints.txt."""
    constraints = _constraint_pins()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = _pins(deps)
    assert set(PINNED) <= set(pinned), "pyproject.toml must pin torch and torchvision exactly"
    for name, version in pinned.items():
        assert constraints.get(name) == version, f"{name}: pyproject.toml {version} vs constraints.txt {constraints.get(name)}"


def test_readme_states_the_pinned_torch():
    torch_pin = _constraint_pins()["torch"]
    stated = re.findall(r"(?<![\w-])torch==([^\s`]+)", (ROOT / "README.md").read_text())
    assert stated and set(stated) == {torch_pin}, f"README.md states torch {stated}, constraints.txt pins {torch_pin}"


def test_installed_torch_is_the_pinned_one():
    """The environment the tests run in is the one the files describe (a local build tag is allowed)."""
    constraints = _constraint_pins()
    for name in PINNED:
        installed = metadata.version(name).split("+")[0]
        assert installed == constraints[name], f"{name} {installed} installed, constraints.txt pins {constraints[name]}"
