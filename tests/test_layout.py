"""The package's shape: the layered import contract (setup.cfg), no import cycle, small modules."""
import configparser
import graphlib
import re
import subprocess
import sys
from pathlib import Path

import grimp

from sparrow_llm.config import REPO_ROOT
from sparrow_llm.registry import PREPARE_STEPS, RANKERS, RERANKERS, ranker_names

PACKAGE = REPO_ROOT / "sparrow_llm"
MAX_LINES = 420  # "about 400": a module that grows past it holds two things


def test_the_layered_import_contract_holds():
    # Layers (domain at the bottom, the CLI at the top), rankers apart from each other, py4j in the bridge only;
    # grimp reads every import statement, function-level ones too. In a child process: import-linter configures
    # logging, which would switch off the loggers of every test after this one.
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           f"sys.exit(lint_imports(config_filename={str(REPO_ROOT / 'setup.cfg')!r}, no_cache=True))"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


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


def test_every_registered_model_is_a_plugin_model_of_the_stage():
    # The Java stage owns its built-in model names without asking the store (so a store outage still gets the
    # host-fallback contract); the registry and that list must name the same models.
    java = (REPO_ROOT / "jvm_bridge" / "bridge" / "src" / "main" / "java" / "io" / "sparrowllm" / "bridge"
            / "BridgeConfig.java").read_text()
    built_in = re.search(r"BUILT_IN_MODELS[^;]*?Arrays\.asList\(([^)]*)\)", java, re.S)
    assert built_in, "BUILT_IN_MODELS not found in BridgeConfig.java"
    assert set(re.findall(r'"([^"]+)"', built_in.group(1))) == set(ranker_names())


def _layer_of(module: str, layers: list[list[str]]) -> int:
    return next(i for i, layer in enumerate(layers) if any(module == m or module.startswith(m + ".") for m in layer))


def test_the_registrys_import_strings_point_down_a_layer():
    # Import strings are imports grimp cannot see: each must name a module below the registry (a ranker's own
    # room), never one above it (the pipeline, the evaluation, the CLI), which would be a hidden loop.
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    layers = [[m.strip() for m in line.split("|")]
              for line in config["importlinter:contract:layers"]["layers"].strip().splitlines()]
    registry = _layer_of("sparrow_llm.registry", layers)
    targets = [*RANKERS.values(), *RERANKERS.values(), *PREPARE_STEPS.values()]
    above = [t for t in targets if _layer_of(t.partition(":")[0], layers) <= registry]
    assert not above, f"registry import strings at or above the registry's layer: {above}"
    assert _layer_of("sparrow_llm.pipeline.rerank", layers) < registry  # the check can fail
