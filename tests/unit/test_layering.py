"""The layout's rules, checked on the source: only the adapters import mitmproxy, test modules do
not import each other (by module or by name, absolute or relative), and every package folder is
shipped."""

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


def imported_names(path: Path) -> set[str]:
    """Every module and name an import statement names: `from a import b` gives ``a`` and ``a.b``
    (b may be a module), a relative import keeps its dots (``from . import b`` gives ``.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module:
                names.add(base)
            names.update(f"{base}.{a.name}" if node.module else f"{base}{a.name}" for a in node.names)
    return names


def imports_of_test_modules(path: Path, test_modules: set[str]) -> list[str]:
    """The imports in `path` that name a test module, as a module or as a name imported from one."""
    return sorted(m for m in imported_names(path) if any(part in test_modules for part in m.split(".")))


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
        bad = imports_of_test_modules(path, test_modules)
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert not offenders, f"shared test helpers belong in tests/support: {offenders}"


def test_the_checker_sees_a_test_module_import_in_every_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import test_a\n"
        "from support.test_b import helper\n"
        "from support import test_c\n"
        "from . import test_d\n"
        "from .test_e import helper\n"
        "from .. import support, test_f\n"
        "def f():\n"
        "    from unit.recording import test_g as g\n"
        "from support import harness\n"
    )
    found = imports_of_test_modules(probe, {f"test_{c}" for c in "abcdefg"})
    assert found == [
        "..test_f",
        ".test_d",
        ".test_e",
        ".test_e.helper",
        "support.test_b",
        "support.test_b.helper",
        "support.test_c",
        "test_a",
        "unit.recording.test_g",
    ]


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
