"""The package layers of ARCHITECTURE.md hold: no upward import, no cycle, no torch below the models."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "xmr"


def declared_layers() -> dict[str, int]:
    """Package -> its line in ARCHITECTURE.md's ``layers`` block, 0 = the bottom line."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "ARCHITECTURE.md has no ```layers block"
    lines = [line.split() for line in block.group(1).strip().splitlines()]
    return {pkg: level for level, names in enumerate(reversed(lines)) for pkg in names}


def package_of(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def imports(src: Path = SRC) -> dict[str, set[tuple[str, str]]]:
    """Package -> {(imported package, where)} over every xmr import, lazy ones included."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in sorted(src.rglob("*.py")):
        pkg = package_of(path, src)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "xmr" and len(parts) > 1 and parts[1] != pkg:
                    out[pkg].add((parts[1], f"{path.relative_to(src)}:{node.lineno}"))
    return out


def test_every_package_is_placed() -> None:
    layers = declared_layers()
    found = {package_of(p) for p in SRC.rglob("*.py")}
    assert found - set(layers) == set(), "packages missing from ARCHITECTURE.md's layers"
    assert set(layers) - found == set(), "ARCHITECTURE.md names packages that do not exist"


def upward_imports(src: Path = SRC) -> list[str]:
    layers = declared_layers()
    return [f"{where}: {pkg} (line {layers[pkg]}) imports {dep} (line {layers[dep]})"
            for pkg, deps in imports(src).items() for dep, where in deps if layers[dep] >= layers[pkg]]


def test_imports_point_down() -> None:
    assert upward_imports() == []


def test_no_package_cycle() -> None:
    graph = {pkg: {dep for dep, _ in deps} for pkg, deps in imports().items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, node])):
                return cycle
        state[node] = 2
        return None

    for pkg in sorted(graph):
        if pkg not in state:
            assert visit(pkg, []) is None


def test_numeric_layers_do_not_import_torch() -> None:
    code = ("import sys, xmr.index, xmr.rerank, xmr.evaluation.metrics; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src")}).stdout.strip()
    assert out == "[]"


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "bad.py").write_text("def f():\n    from xmr.models import JointModel\n")
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "ok.py").write_text("import xmr.index.registry\n")
    lines = declared_layers()
    assert upward_imports(tmp_path) == [f"index/bad.py:2: index (line {lines['index']}) imports models "
                                        f"(line {lines['models']})"]


def test_a_wrong_modality_is_refused_not_sent_to_the_other_head() -> None:
    import numpy as np
    import pytest

    from xmr.errors import XmrError
    from xmr.models import JointModel, ModelConfig

    model = JointModel(ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=8, text_dim=8,
                                   embed_dim=4, head="linear"))
    feats = np.zeros((2, 8), np.float32)
    assert model.embed_numpy(feats, "text").shape == (2, 4)
    with pytest.raises(XmrError, match="'images'"):
        model.embed_numpy(feats, "images")  # type: ignore[arg-type]


def test_checkpoints_written_before_the_unused_fields_went_still_load(tmp_path: Path) -> None:
    import json

    from xmr.models import JointModel, ModelConfig, load_model

    model = JointModel(ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=8, text_dim=8,
                                   embed_dim=4, head="linear"))
    model.save(tmp_path / "best")
    meta = json.loads((tmp_path / "best" / "model.json").read_text())
    meta["config"].update(image_encoder_kwargs={}, text_encoder_kwargs={})  # as every older model.json has
    (tmp_path / "best" / "model.json").write_text(json.dumps(meta))
    assert load_model(tmp_path / "best").model_id == model.model_id
