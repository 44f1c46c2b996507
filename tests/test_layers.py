"""The layers of docs/layers.md: every import of resdet's own code (function-local ones
included) goes to a lower layer, or stays inside its own package."""

import ast

from conftest import REPO

# rank of each module by its name's prefix (the longest prefix wins), as docs/layers.md;
# a decimal orders two packages within one layer
RANKS = {
    "resdet.__main__": 12,
    "resdet.tools": 11,
    "resdet": 10,
    "resdet.api": 9,
    "resdet.cli": 9,
    "resdet.predictor": 8,
    "resdet.prediction": 8.1,
    "resdet.pipeline": 8.1,
    "resdet.analysis": 8,
    "resdet.report": 8,
    "resdet.detection": 7,
    "resdet.pretrain": 7,
    "resdet.export": 7,
    "resdet.engine": 6,
    "resdet.checkpoint": 5,
    "resdet.convert": 5,
    "resdet.weights": 4,
    "resdet.run_folder": 4,
    "resdet.evaluation": 4,
    "resdet.data": 3,
    "resdet.lazy": 3.2,
    "resdet.modeling": 3.1,
    "resdet.layers": 3,
    "resdet.model_zoo": 3,
    "resdet.config": 2,
    "resdet.io": 1,
    "resdet.sampling": 1,
    "resdet.plots": 1.1,
    "resdet.errors": 0,
    "resdet.version": 0,
}


def _modules():
    root = REPO / "resdet"
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _rank(name):
    prefix = max((p for p in RANKS if name == p or name.startswith(p + ".")), key=len)
    return RANKS[prefix], prefix


def _imports(name, path, known):
    tree = ast.parse(path.read_text())
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                module = ".".join(stem + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                yield t, node.lineno


def test_every_import_goes_down_or_stays_in_its_package():
    known = _modules()
    assert set(known) - {"resdet"}, "no modules found"
    wrong = []
    for name, path in sorted(known.items()):
        rank, package = _rank(name)
        for target, line in _imports(name, path, known):
            their_rank, their_package = _rank(target)
            if their_rank > rank or (their_rank == rank and their_package != package):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert wrong == []


def test_the_table_names_every_module():
    """A new module gets a place in docs/layers.md (and in RANKS) on purpose."""
    for name in _modules():
        assert _rank(name)[1] != "resdet" or name == "resdet" or name.startswith("resdet.tools"), (
            name
        )


def test_no_function_local_imports_of_resdets_own_code():
    """A function-local import of resdet's own code hides an import circle; none is needed
    to keep ``import resdet`` light (what it costs is torch and Detectron2's import)."""
    known = _modules()
    local = []
    for name, path in sorted(known.items()):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                is_own = isinstance(node, ast.ImportFrom) and (
                    node.level > 0 or (node.module or "").startswith("resdet")
                )
                is_own |= isinstance(node, ast.Import) and any(
                    a.name.startswith("resdet") for a in node.names
                )
                if is_own:
                    local.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert local == []
