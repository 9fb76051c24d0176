"""The package's shape: the layered import contract (setup.cfg), no import cycle, small modules."""
import graphlib
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

from sparrow_llm.config import REPO_ROOT

PACKAGE = REPO_ROOT / "sparrow_llm"
MAX_LINES = 420  # "about 400": a module that grows past it holds two things


def test_the_layered_import_contract_holds():
    # Layers (domain at the bottom, the CLI at the top), rankers apart from each other, py4j in the bridge only;
    # grimp reads every import statement, function-level ones too.
    assert lint_imports(config_filename=str(REPO_ROOT / "setup.cfg"), no_cache=True) == 0


def test_no_import_cycle():
    graph = grimp.build_graph("sparrow_llm", cache_dir=None)
    sorter = graphlib.TopologicalSorter({m: graph.find_modules_directly_imported_by(m) for m in graph.modules})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert "sparrow_llm.schema" in order and "sparrow_llm.cli" in order


def test_the_cycle_check_finds_a_cycle():
    # The check above must be able to fail: a two-module cycle is reported.
    sorter = graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}})
    try:
        list(sorter.static_order())
    except graphlib.CycleError:
        return
    raise AssertionError("graphlib missed a cycle")


def test_modules_stay_small():
    sizes = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}


def test_only_the_bridge_client_mentions_py4j():
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "import py4j" in p.read_text()
                   or "from py4j" in p.read_text())
    assert users == [str(Path("bridge") / "client.py")]
