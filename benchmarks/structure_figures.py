"""The structure figures of issue 26 for a checkout: config sizes, long files, library errors that word
the CLI, environment writes in the CLI, task-name comparisons outside ``tasks/``.

    python benchmarks/structure_figures.py                 # this checkout
    python benchmarks/structure_figures.py /tmp/old-tree   # another one (its src/ is imported in a child process)

Each figure is counted the same way for any checkout, so two runs compare a change's before and after.
The error scan is the one ``tests/test_error_wording.py`` runs (its ``SRC`` pointed at the checkout).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_CONFIG_SIZES = """
import dataclasses, inspect, json
from xmr.training import TrainConfig
from xmr.runs import RunConfig
import xmr.training.trainer as trainer
import xmr.workflows.index as index
print(json.dumps({"TrainConfig fields": len(dataclasses.fields(TrainConfig)),
                  "RunConfig fields": len(dataclasses.fields(RunConfig)),
                  "run_epoch parameters": len(inspect.signature(trainer.run_epoch).parameters),
                  "index_run parameters": len(inspect.signature(index.index_run).parameters)}))
"""
#: an assignment to, or a setdefault / update / pop of, the process environment
_ENV_WRITE = re.compile(r"os\.environ\[[^]]+\]\s*=(?!=)|os\.environ\.(setdefault|update|pop)\(|os\.putenv\(")
#: a task's name compared as a string
_TASK_COMPARE = re.compile(r"""(==|!=)\s*["'](retrieval|composed)["']|["'](retrieval|composed)["']\s*(==|!=)""")


def _python_files(root: Path, under: str) -> list[Path]:
    base = root / "src" / "xmr"
    return sorted(p for p in base.rglob("*.py") if p.relative_to(base).parts[0].removesuffix(".py") == under)


def figures(root: Path) -> dict[str, object]:
    src = root / "src" / "xmr"
    out: dict[str, object] = json.loads(subprocess.run(
        [sys.executable, "-c", _CONFIG_SIZES], env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True).stdout)
    lengths = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in src.rglob("*.py")}
    out["src files over 500 lines"] = {k: n for k, n in sorted(lengths.items(), key=lambda kv: -kv[1]) if n > 500}
    out["longest src file"] = max(lengths.items(), key=lambda kv: kv[1])
    out["os.environ writes in the CLI"] = sum(len(_ENV_WRITE.findall(p.read_text()))
                                               for p in [*_python_files(root, "cli")])
    out["task-name string comparisons outside tasks/"] = [
        f"{p.relative_to(root)}:{i}" for p in src.rglob("*.py") if p.relative_to(src).parts[0] != "tasks"
        for i, line in enumerate(p.read_text().splitlines(), 1) if _TASK_COMPARE.search(line)]
    sys.path.insert(0, str(HERE.parent / "tests"))
    import test_error_wording as scan  # the test's own scan, pointed at the checkout

    scan.SRC = src
    found = scan.cli_wording_below_the_edges()
    out["errors below cli/ and serve/ that name a flag or an xmr command"] = len(found)
    out["... in files"] = len({f.split(":")[0] for f in found})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default=str(HERE.parent), help="the checkout (default: this one)")
    for name, value in figures(Path(ap.parse_args().root).resolve()).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
