"""The layout's rules, checked on the source: only the adapters import mitmproxy, test modules do
not import each other, and every package folder is shipped."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "addons"  # the `gatehouse` package (pyproject.toml's package-dir)
ADAPTERS = PACKAGE / "mitm"
# The mitmdump script: it builds the addon list, so it imports the adapters (not mitmproxy).
SCRIPT = PACKAGE / "gateway.py"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_the_adapters_import_mitmproxy():
    offenders = {}
    for path in python_files(PACKAGE, REPO / "scripts"):
        if ADAPTERS in path.parents:
            continue
        bad = sorted(m for m in imported_modules(path) if m == "mitmproxy" or m.startswith("mitmproxy."))
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert not offenders, f"only gatehouse.mitm may import mitmproxy: {offenders}"


def test_the_checker_sees_a_mitmproxy_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from mitmproxy.http import HTTPFlow\n    import mitmproxy\n")
    assert imported_modules(probe) == {"mitmproxy.http", "mitmproxy"}


def test_core_packages_do_not_import_the_adapters():
    offenders = {}
    for path in python_files(PACKAGE):
        if ADAPTERS in path.parents or path == SCRIPT:
            continue
        bad = sorted(m for m in imported_modules(path) if m == "gatehouse.mitm" or m.startswith("gatehouse.mitm."))
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert not offenders, f"the core must not depend on the mitmproxy adapters: {offenders}"


def test_test_modules_do_not_import_each_other():
    tests = REPO / "tests"
    test_modules = {p.stem for p in python_files(tests) if p.stem.startswith("test_")}
    offenders = {}
    for path in python_files(tests):
        bad = sorted(m for m in imported_modules(path) if m.split(".")[-1] in test_modules)
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert not offenders, f"shared test helpers belong in tests/support: {offenders}"


def test_every_package_folder_is_shipped():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == set(config["packages"]), (
        sorted(found - set(config["packages"])),
        sorted(set(config["packages"]) - found),
    )
