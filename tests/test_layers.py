"""The package's import layering, read from the source with `ast` (nothing is imported).

Every `import` of a `ggr_hf` module counts, at module level or inside a function (`TYPE_CHECKING`
blocks excluded). The rules (README "Architecture"): no import cycle; backbones know neither data,
training, experiments, the CLI nor the GGR wrapper; data imports no model, prior, head, training or
hub code; priors, heads, losses and the model import no training, experiments or CLI; the hub's file
helpers are a leaf (they may raise ggr-hf's errors); the training loop imports no experiment wiring and no CLI; the experiments layer
imports no CLI; no module holds more than 800 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 800

# (importer prefix, forbidden prefix)
RULES = [
    *[("ggr_hf.models", p) for p in ("ggr_hf.data", "ggr_hf.training", "ggr_hf.experiments", "ggr_hf.cli")],
    ("ggr_hf.models", "ggr_hf.modeling_ggr"),
    ("ggr_hf.models", "ggr_hf.priors"),
    ("ggr_hf.models", "ggr_hf.heads"),
    *[
        ("ggr_hf.data", p)
        for p in (
            "ggr_hf.models",
            "ggr_hf.modeling_ggr",
            "ggr_hf.heads",
            "ggr_hf.priors",
            "ggr_hf.losses",
            "ggr_hf.training",
            "ggr_hf.experiments",
            "ggr_hf.hub",
            "ggr_hf.evaluation",
        )
    ],
    *[
        (a, b)
        for a in (
            "ggr_hf.priors",
            "ggr_hf.heads",
            "ggr_hf.losses",
            "ggr_hf.modeling_ggr",
            "ggr_hf.configuration_ggr",
        )
        for b in ("ggr_hf.training", "ggr_hf.experiments", "ggr_hf.cli", "ggr_hf.evaluation")
    ],
    *[(a, "ggr_hf.data") for a in ("ggr_hf.heads", "ggr_hf.losses", "ggr_hf.modeling_ggr")],
    ("ggr_hf.priors", "ggr_hf.modeling_ggr"),
    ("ggr_hf.priors", "ggr_hf.heads"),
    ("ggr_hf.hub", "ggr_hf.modeling_ggr"),
    ("ggr_hf.hub", "ggr_hf.training"),
    ("ggr_hf.hub", "ggr_hf.experiments"),
    ("ggr_hf.hub", "ggr_hf.cli"),
    ("ggr_hf.evaluation", "ggr_hf.training"),
    ("ggr_hf.evaluation", "ggr_hf.experiments"),
    ("ggr_hf.evaluation", "ggr_hf.cli"),
    ("ggr_hf.training", "ggr_hf.experiments"),
    ("ggr_hf.training", "ggr_hf.cli"),
    ("ggr_hf.experiments", "ggr_hf.cli"),
    # Approximate retrieval works on any model's scoring contract: no data, training, experiments or CLI.
    *[
        ("ggr_hf.retrieval", p)
        for p in ("ggr_hf.data", "ggr_hf.training", "ggr_hf.experiments", "ggr_hf.cli")
    ],
    # The baselines and the shared scoring contract sit beside the GGR wrapper: they know backbones,
    # losses and the hub, never GGR's priors, data, training, experiments or the CLI.
    *[
        (a, b)
        for a in ("ggr_hf.baselines", "ggr_hf.modeling_recommender", "ggr_hf.configuration_recommender")
        for b in (
            "ggr_hf.data",
            "ggr_hf.training",
            "ggr_hf.experiments",
            "ggr_hf.cli",
            "ggr_hf.evaluation",
            "ggr_hf.modeling_ggr",
            "ggr_hf.priors",
            "ggr_hf.recommenders",
        )
    ],
    ("ggr_hf.modeling_recommender", "ggr_hf.baselines"),
    ("ggr_hf.models", "ggr_hf.baselines"),
    ("ggr_hf.models", "ggr_hf.modeling_recommender"),
    # Only the top layers look models up by type.
    *[
        (a, "ggr_hf.recommenders")
        for a in ("ggr_hf.models", "ggr_hf.hub", "ggr_hf.data", "ggr_hf.evaluation", "ggr_hf.training")
    ],
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "ggr_hf").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in node.body
        for n in ast.walk(sub)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names.add(name)
            names.update(f"{name}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("ggr_hf")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path, module):
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                candidate = ".".join(parts[:k])
                if candidate in modules and candidate != module:
                    targets.add(candidate)
                    break
        graph[module] = targets - {"ggr_hf"}
    return graph


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_layer_rules_hold():
    broken = [
        f"{module} imports {target}"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        for importer, forbidden in RULES
        if _under(module, importer) and _under(target, forbidden)
    ]
    assert not broken, "layer breaks:\n" + "\n".join(broken)


def test_hub_file_helpers_are_a_leaf():
    graph = _graph()
    leaf = [m for m in graph if m in ("ggr_hf.hub.io",)]
    assert leaf, "ggr_hf.hub.io is missing"
    for module in leaf:
        assert graph[module] <= {"ggr_hf.configuration_utils", "ggr_hf.errors"}, (module, graph[module])


def test_errors_are_the_bottom_layer():
    assert _graph()["ggr_hf.errors"] == set()


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size(module):
    lines = sum(1 for _ in _modules()[module].open(encoding="utf-8"))
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES})"


def test_nothing_outside_priors_branches_on_a_prior_type():
    offenders = []
    for module, path in _modules().items():
        if _under(module, "ggr_hf.priors"):
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in ('["type"] ==', "['type'] ==", '.get("type") ==', "ITEM_RESTRICTING_TYPES"):
            if pattern in text:
                offenders.append(f"{module}: {pattern}")
    assert not offenders, offenders
