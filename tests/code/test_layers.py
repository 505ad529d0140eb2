"""The architecture's layers, from the import graph: no arrow runs upward or sideways.

Bottom to top: config and base; the feature contract; data and model; train and evaluate; the
registry (which knows no stage) and tuning; serve and batch; lineage and tracking (what a run becomes); the pipeline; the closed loop (watch); the CLI.
A module may import its own package and any lower layer, nothing else.
"""

import ast
from pathlib import Path

import rayline

SRC = Path(rayline.__file__).parent
LAYERS = [
    {"config", "errors", "storage", "layout", "runtime", "ray_compat"},
    {"features"},
    {"data", "model"},
    {"train", "evaluate"},
    {"registry", "tune"},
    {"serve", "batch"},
    {"lineage", "tracking"},
    {"pipeline"},
    {"watch"},
    {"cli"},
]
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
BASE = LAYERS[0]


def _imports() -> list[tuple[str, str, str]]:
    """(file, importing package, imported rayline module) for every rayline import."""
    out = []
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC)
        pkg = rel.parts[0].removesuffix(".py")
        if pkg == "__init__":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rayline."):
                # `from rayline.data import sources` imports rayline.data.sources
                out += [(str(rel), pkg, f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                out += [(str(rel), pkg, a.name) for a in node.names if a.name.startswith("rayline.")]
    return out


def test_every_package_has_a_layer():
    packages = {p.name.removesuffix(".py") for p in SRC.iterdir() if p.name != "__init__.py" and
                (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert packages == set(LAYER), packages ^ set(LAYER)


def test_no_import_runs_upward_or_sideways():
    wrong = []
    for file, pkg, module in _imports():
        target = module.split(".")[1]
        same_package = target == pkg
        base_to_base = pkg in BASE and target in BASE
        if not (same_package or base_to_base or LAYER[target] < LAYER[pkg]):
            wrong.append(f"{file}: {module}")
    assert not wrong, wrong


def test_the_registry_knows_no_stage_and_serving_no_ingestion_or_training():
    # data.lookup_store reads the lookup snapshot a version names, data.csv_rows a CSV file's rows
    # (an outcome file): no ingestion code
    allowed = {"registry": {"model", "features"}, "serve": {"model", "features", "registry", "data.lookup_store",
                                                            "data.csv_rows"},
               "batch": {"model", "features", "registry", "data.sources", "data.lookup_store", "batch"}}
    wrong = []
    for file, pkg, module in _imports():
        if pkg not in allowed or module.split(".")[1] in BASE or module.split(".")[1] == pkg:
            continue
        name = ".".join(module.split(".")[1:3]) if module.startswith("rayline.data.") else module.split(".")[1]
        if name not in allowed[pkg]:
            wrong.append(f"{file}: {module}")
    assert not wrong, wrong
