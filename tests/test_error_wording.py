"""Errors carry their facts as fields and each edge words them: no CLI flag and no ``xmr ...`` command
in an error raised below ``cli/`` and ``serve/``; one error worded three ways (Python, CLI, HTTP);
fields kept across pickling; every parameter an error names is an option of some command."""

from __future__ import annotations

import argparse
import ast
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xmr.cli import build_parser, cli_wording, main
from xmr.errors import NO_VALUE, Param, XmrError
from xmr.errors import Call as XmrCall

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "xmr"
EDGES = ("cli", "serve")  # the packages that word errors for a user (and the CLI module before it was split)

#: a command-line flag in a text (``--overwrite``, ``--rerank-param``), not ``a--b`` or ``---``
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: texts that look like a flag or a command but are neither of xmr's: (regex, why allowed)
FOREIGN = ((re.compile(r"`ray start --head`"), "Ray's own command to start a cluster: not an xmr option"),
           (re.compile(r"\bpip install --no-deps\b"), "pip's own option (installing a package), not xmr's"))


def _subcommands() -> list[str]:
    """The first word of every ``xmr`` subcommand (``train``, ``index``, ...), read from the parser."""
    out: set[str] = set()
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            out |= {name.split()[0] for name in action.choices}
    return sorted(out)


def _command_pattern() -> re.Pattern[str]:
    """``xmr index``, ``xmr train`` ... as a command, not the noun phrase "an xmr index"."""
    return re.compile(r"(?<!\ban )\bxmr (?:" + "|".join(map(re.escape, _subcommands())) + r")\b")


def _is_edge(path: Path) -> bool:
    rel = path.relative_to(SRC).parts
    return rel[0] in EDGES or rel[0].removesuffix(".py") in EDGES


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


class _Module:
    """One source file: its top-level names (constants and functions) and its imports of xmr names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text())
        self.docs = _docstrings(self.tree)
        self.top: dict[str, ast.AST] = {}
        self.imported: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.top[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        self.top[target.id] = node.value
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xmr"):
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = (node.module, alias.name)


class _Source:
    """Every module of ``src/xmr``, the XmrError subclasses and the class-level UPPER constants."""

    def __init__(self) -> None:
        self.modules = {p: _Module(p) for p in sorted(SRC.rglob("*.py"))}
        self.by_name = {".".join(("xmr", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): m
                        for p, m in self.modules.items()}
        self.errors = {"XmrError"}
        grew = True
        while grew:  # subclasses of subclasses
            classes = {n.name for m in self.modules.values() for n in ast.walk(m.tree) if isinstance(n, ast.ClassDef)
                       and any(isinstance(b, ast.Name) and b.id in self.errors for b in n.bases)}
            grew = not classes <= self.errors
            self.errors |= classes
        self.class_constants: dict[str, list[tuple[_Module, ast.AST]]] = {}
        for m in self.modules.values():
            for cls in (n for n in ast.walk(m.tree) if isinstance(n, ast.ClassDef)):
                for node in cls.body:
                    target = node.targets[0] if isinstance(node, ast.Assign) else \
                        node.target if isinstance(node, ast.AnnAssign) else None
                    if isinstance(target, ast.Name) and target.id.isupper() and node.value is not None:  # type: ignore[union-attr]
                        self.class_constants.setdefault(target.id, []).append((m, node.value))  # type: ignore[union-attr]

    def resolve(self, module: _Module, name: str, depth: int = 0) -> tuple[_Module, ast.AST] | None:
        """What ``name`` stands for in ``module``: its own top-level definition or an imported one."""
        if name in module.top:
            return module, module.top[name]
        if name in module.imported and depth < 3:
            where, real = module.imported[name]
            other = self.by_name.get(where)
            return self.resolve(other, real, depth + 1) if other is not None else None
        return None

    def error_calls(self, module: _Module) -> Iterator[ast.Call]:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name in self.errors or (isinstance(f, ast.Attribute) and name in ("prefixed", "suffixed")):
                    yield node

    def texts(self, module: _Module, call: ast.Call) -> Iterator[tuple[_Module, ast.Constant]]:
        """Every string an error call's text is made of: its own literals, the constants and local
        variables it names, the strings of the functions it calls (one level), class constants."""
        seen: set[int] = set()
        parts = (*call.args, *(k.value for k in call.keywords))
        todo: list[tuple[_Module, ast.AST, int]] = [(module, a, 0) for a in parts]
        function = _enclosing_function(module.tree, call)
        while todo:
            mod, node, depth = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and id(sub) not in mod.docs:
                    yield mod, sub
                elif isinstance(sub, ast.Name) and depth < 3:  # a message kept in a variable or a constant
                    local = _local_values(function, sub.id) if mod is module and function is not None else []
                    found = self.resolve(mod, sub.id)
                    values = [(mod, v) for v in local] + ([found] if found is not None else [])
                    todo += [(m, v, depth + 1) for m, v in values if _text_like(v)]
                elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and depth < 3:  # a helper's text
                    found = self.resolve(mod, sub.func.id)
                    if found is not None and isinstance(found[1], (ast.FunctionDef, ast.AsyncFunctionDef)):
                        todo += [(found[0], r.value, depth + 1) for r in ast.walk(found[1])
                                 if isinstance(r, ast.Return) and r.value is not None and _text_like(r.value)]
                elif isinstance(sub, ast.Attribute) and sub.attr.isupper() and depth < 3:
                    todo += [(m, v, depth + 1) for m, v in self.class_constants.get(sub.attr, []) if _text_like(v)]


def _text_like(node: ast.AST) -> bool:
    """An expression that builds a text: a string, an f-string, a sum, a choice or a call's result."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp):
        return _text_like(node.left) or _text_like(node.right)
    if isinstance(node, ast.IfExp):
        return _text_like(node.body) or _text_like(node.orelse)
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name)  # a helper of this package, not ``subprocess.run(...)``
    return isinstance(node, (ast.JoinedStr, ast.Name))


def _enclosing_function(tree: ast.AST, target: ast.AST) -> ast.AST | None:
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(n is target for n in ast.walk(node)):
            if best is None or any(n is node for n in ast.walk(best)):
                best = node
    return best


def _local_values(function: ast.AST, name: str) -> list[ast.AST]:
    out: list[ast.AST] = []
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            out.append(node.value)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name) \
                and node.target.id == name and node.value is not None:
            out.append(node.value)
    return out


def cli_wording_below_the_edges() -> list[str]:
    """``file:line: text`` for every flag or ``xmr`` command in the text of an error raised below
    ``cli/`` and ``serve/`` (multi-line messages, message constants and helper functions included)."""
    source, command = _Source(), _command_pattern()
    found: set[tuple[str, int, str]] = set()
    for path, module in source.modules.items():
        if _is_edge(path):
            continue
        for call in source.error_calls(module):
            for mod, const in source.texts(module, call):
                text = const.value
                for pattern, _why in FOREIGN:
                    text = pattern.sub("", text)
                for m in (*FLAG.finditer(text), *command.finditer(text)):
                    found.add((str(mod.path.relative_to(SRC)), const.lineno, m.group(0)))
    return [f"{f}:{line}: {what}" for f, line, what in sorted(found)]


def test_no_cli_wording_in_library_errors() -> None:
    offenders = cli_wording_below_the_edges()
    assert not offenders, "errors below cli/ and serve/ that name a CLI flag or an xmr command (give the " \
                          "parameter as a Param field):\n" + "\n".join(offenders)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scan is not blind: it sees a flag in a multi-line message, in a constant, in a helper."""
    source = _Source()
    code = ('from xmr.errors import XmrError\nHINT = "pass --overwrite"\n'
            'def hint() -> str:\n    return "run `xmr index RUN`"\n'
            'def f(x):\n    raise XmrError(f"{x} exists; "\n                   "give --out")\n'
            'def g():\n    raise XmrError(HINT)\n'
            'def h():\n    msg = "an xmr index folder; use --factory Flat"\n    raise XmrError(msg + hint())\n')
    path = tmp_path / "m.py"
    path.write_text(code)
    module = _Module(path)
    command = _command_pattern()
    seen = sorted({m.group(0) for call in source.error_calls(module) for _, c in source.texts(module, call)
                   for m in (*FLAG.finditer(c.value), *command.finditer(c.value))})
    assert seen == ["--factory", "--out", "--overwrite", "xmr index"]


# -- one error, three edges ---------------------------------------------------------------------------


def _exists_error(tmp_path: Path) -> XmrError:
    """The error ``write_folder_manifest`` raises for an output file that exists."""
    from xmr.workflows.folder import write_folder_manifest

    (tmp_path / "m.jsonl").write_text("{}\n")
    with pytest.raises(XmrError) as e:
        write_folder_manifest(tmp_path, tmp_path / "m.jsonl")
    return e.value


def test_one_error_worded_by_python_cli_and_http(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _exists_error(tmp_path)
    out = str(tmp_path / "m.jsonl")
    assert str(err) == f"{out} exists; pass overwrite=True to replace it, or give another out"
    assert err.fields["path"] == out and [p.name for p in err.params()] == ["overwrite", "out"]

    assert main(["data", "manifest", str(tmp_path), "--out", out]) == 2
    assert capsys.readouterr().err.strip() == \
        f"xmr: error: {out} exists; pass --overwrite to replace it, or give another --out"

    from fastapi.testclient import TestClient

    from xmr.serve.app import create_app

    response = TestClient(create_app(_Raising(err)), raise_server_exceptions=False).get("/items/x")  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.json() == {"error": f"{out} exists; pass overwrite to replace it, or give another out",
                               "detail": [{"field": "overwrite", "value": True}, {"field": "out"}]}


class _Raising:
    """A stand-in service whose every item look-up raises ``error`` (the app needs no more of it)."""

    run_dir = "run"

    def __init__(self, error: XmrError) -> None:
        self.error = error

    def observe_batches(self, callback: Any) -> None:
        pass

    def item(self, item_id: str) -> dict[str, object]:
        raise self.error


def test_pickling_keeps_the_fields_and_the_type(tmp_path: Path) -> None:
    err = _exists_error(tmp_path).prefixed("manifest: ")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is XmrError and back.fields == err.fields and str(back) == str(err)
    assert back.worded(cli_wording) == err.worded(cli_wording)

    from xmr.encoders.image_io import UnreadableImage
    from xmr.utils.files import InputFileError

    for e in (UnreadableImage("a.png", "image not found"), InputFileError("m.jsonl", "not found", is_folder=True)):
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is type(e) and str(again) == str(e) and again.__dict__ == e.__dict__


# -- every parameter an error names is an option -------------------------------------------------------

#: Param names that are no CLI option, with the reason
NOT_OPTIONS: dict[str, str] = {
    "mmap": "Index.load(mmap=...): Python only; no command edits a memory-mapped index, so the CLI never "
            "shows this error",
}


def _literal(node: ast.AST) -> Any:
    """A Param's value written as a literal (``"keep"``, ``True``, ``("i2t",)``), else NO_VALUE."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NO_VALUE


def _params_below_the_edges() -> Iterator[tuple[str, str | None, Param]]:
    """``(where, job, param)`` for every ``Param("name", ...)`` literal below the edges; ``job`` is the
    name of the ``Call("job", ...)`` it is an argument of (None for a Param of its own). A ``Call``
    itself comes as ``(where, name, Call(name))``."""
    for path in sorted(SRC.rglob("*.py")):
        if _is_edge(path) or path.name == "errors.py":
            continue
        inside: dict[int, str] = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                continue
            where, name = f"{path.relative_to(SRC)}:{node.lineno}", node.args[0].value
            if node.func.id == "Call":
                yield where, name, XmrCall(name)
                inside.update({id(a): name for a in node.args[1:]})
            elif node.func.id == "Param":
                value = _literal(node.args[1]) if len(node.args) > 1 else NO_VALUE
                yield where, inside.get(id(node)), Param(name, value)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every ``xmr`` command's parser by its words (``""``: the top level, ``"index add"``)."""
    out, todo = {}, [("", build_parser())]
    while todo:
        words, parser = todo.pop()
        out[words] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(name if not words or name.startswith(words) else f"{words} {name}", sub)
                         for name, sub in action.choices.items()]
    return out


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def test_every_param_an_error_names_is_an_option() -> None:
    """A Param is worded by the CLI as an option some command has (one given in a job the error names:
    an option of that job's command, or one of its positional arguments); a job has a command."""
    from xmr.cli.errors import _COMMAND_OF_CALL, _OPTION_OF_VALUE

    positional = {name for _, names in _COMMAND_OF_CALL.values() for name in names}  # given to a job in a variable
    spelled_by_value = {name for name, _ in _OPTION_OF_VALUE}  # each value an option (``--keep-edits``)
    found = list(_params_below_the_edges())
    assert len({p.name for _, _, p in found}) >= 10, found  # the scan sees the library's Params
    parsers = _parsers()
    top = _options(parsers[""])
    every = set().union(*map(_options, parsers.values()))
    bad: list[str] = []
    for where, job, p in found:
        if isinstance(p, XmrCall):
            if p.name not in _COMMAND_OF_CALL:
                bad.append(f"{where}: job {p.name!r} has no command (cli.errors._COMMAND_OF_CALL)")
            continue
        if p.name in NOT_OPTIONS or (job is None and p.name in positional) or \
                (p.value is NO_VALUE and p.name in spelled_by_value):
            continue
        flag = cli_wording(p).split()[0]
        if job is None:
            if flag not in every:
                bad.append(f"{where}: {p} is worded {flag}, an option of no command")
        elif job in _COMMAND_OF_CALL:
            command, arguments = _COMMAND_OF_CALL[job]
            if p.name not in arguments and flag not in _options(parsers[command]) | top:
                bad.append(f"{where}: {p} is worded {flag}, not an option of `xmr {command}`")
    assert not bad, "\n".join(bad)
    assert set(NOT_OPTIONS) <= {p.name for _, _, p in found}, "stale NOT_OPTIONS entries"


@pytest.mark.parametrize(("param", "worded"), [
    (Param("overwrite", True), "--overwrite"), (Param("factory", "Flat"), "--factory Flat"),
    (Param("out_dir", "/tmp/a b"), "--out '/tmp/a b'"), (Param("skip_bad"), "--skip-bad"),
])
def test_cli_wording_of_a_param(param: Param, worded: str) -> None:
    assert cli_wording(param) == worded
    assert param.python() == (param.name if param.value is NO_VALUE else f"{param.name}={param.value!r}")


def _template_problems() -> list[str]:
    """Every ``XmrError(template, **fields)`` call whose template has a placeholder that is not one of
    its fields, or one with a conversion or format spec (``{value!r}``): those stay as written."""
    placeholder = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)([!:][^{}]*)?\}")
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args and node.keywords
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) == "XmrError"):
                continue
            keys = {k.arg for k in node.keywords}
            parts = [node.args[0]] if isinstance(node.args[0], ast.Constant) else \
                [v for v in getattr(node.args[0], "values", []) if isinstance(v, ast.Constant)]
            for part in parts:
                for m in placeholder.finditer(str(part.value)):
                    if m.group(2) or (None not in keys and m.group(1) not in keys):
                        problems.append(f"{path.relative_to(SRC)}:{node.lineno}: {m.group(0)}")
    return problems


def test_every_template_placeholder_is_a_plain_field() -> None:
    assert _template_problems() == []
    e = XmrError("invalid {field}: {value}", field="batch_size", value=repr(1))
    assert str(e) == "invalid batch_size: 1"
