"""The house's floors: ``nni_bsn`` on top of ``evaluators`` and ``search_spaces``, which never import each other nor
``nni_bsn``; inside each package, no sub-package imports one above it; every module and function stays short."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nni_bsn", "evaluators", "search_spaces")

# Inside a package, the floors from the bottom up: a module may import its own floor and those below it. A
# top-level module of the package that is not named here is on the ground floor (``nni_bsn.compat``,
# ``evaluators.base``); ``cli`` and ``__main__`` are the top; a package's own ``__init__`` is its face, above all.
FLOORS = {
    "nni_bsn": ["", "network", "strategy", "jobs", "compare", "cli", "__main__"],
    "evaluators": ["", "counting", "latency", "distributed"],
    "search_spaces": [""],
}


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (imports inside functions count), absolute."""
    here = _dotted(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    return out


def _floor(dotted: str) -> tuple[str, int]:
    """The package and the floor of a module of ours (top-level modules not in FLOORS are on floor 0)."""
    parts = dotted.split(".")
    floors = FLOORS[parts[0]]
    name = parts[1] if len(parts) > 1 else "__init__"
    return parts[0], floors.index(name) if name in floors else 0


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_floor_above_its_own(path):
    if path.name == "__init__.py" and path.parent.name in PACKAGES:  # the face re-exports from any floor
        package, floor = path.parent.name, len(FLOORS[path.parent.name])
    else:
        package, floor = _floor(_dotted(path))
    for name in _imports(path):
        top = name.split(".")[0]
        if top not in PACKAGES or not name:
            continue
        if package != "nni_bsn":
            assert top == package, (
                f"{path.relative_to(ROOT)} imports {name}: {package} imports neither other package"
            )
        if top != package:
            continue
        _, target = _floor(name)
        if name.split(".")[:2] == _dotted(path).split(".")[:2]:
            continue  # its own sub-package
        assert target <= floor, f"{path.relative_to(ROOT)} imports {name}, a floor above its own"


def test_the_floors_name_every_sub_package():
    for pkg, floors in FLOORS.items():
        subs = {p.name for p in (ROOT / pkg).iterdir() if (p / "__init__.py").exists()}
        assert subs <= set(floors), f"{pkg}: sub-packages {subs - set(floors)} are on no floor"


def test_every_sub_package_says_what_it_holds():
    for init in (ROOT / pkg / sub / "__init__.py" for pkg in PACKAGES for sub in FLOORS[pkg]):
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc and len(doc.split()) >= 20, (
                f"{init.relative_to(ROOT)} has no paragraph saying what it holds"
            )


def test_no_family_of_modules_told_apart_by_a_prefix_at_a_top_level():
    for pkg in PACKAGES:
        stems = [p.stem for p in (ROOT / pkg).glob("*.py") if not p.stem.startswith("__")]
        prefixes = {}
        for stem in stems:
            prefixes.setdefault(stem.split("_")[0], []).append(stem)
        families = {k: v for k, v in prefixes.items() if len(v) >= 2}
        assert not families, f"{pkg}/ has modules sharing a name prefix: {families}; give them a sub-package"


def test_no_module_over_450_lines_and_no_function_over_80():
    for path in _modules():
        source = path.read_text()
        assert len(source.splitlines()) <= 450, f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {length} lines"
