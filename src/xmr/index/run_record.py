"""``index_run.json``: what built an index folder and what changed it since, as one typed record.

:class:`IndexRun` is the record; :func:`load_index_run` its one reader (every file written
before reads: keys added later take their defaults, keys it does not know are kept as they are
in :attr:`IndexRun.extra`; a damaged file is one :class:`~xmr.errors.XmrError` naming the file
and the field) and :func:`save_index_run` its one writer (atomic); :func:`read_index_run` reads
the index of a run (its errors name the build that makes one). The parts are typed too: the index
chosen per side (:class:`SideChoice`), the build-time recall check (:class:`RecallCheck`), each
re-ranker's structures (:class:`RerankBuilt`, with its tuned parameters :class:`TunedRerank`) and
each add or remove (:class:`IndexChange`).

On disk (keys sorted; absent ones take the defaults below)::

    {"run": "/abs/run", "model_id": "...", "manifest": "m.jsonl" | "images": "/dir", "recursive": false
     | "shards": "/dir", "split": null, "factory": "Flat", "chosen": {"images": {"factory": "Flat"}, ...},
     "checks": {"text_to_image_recall@10": 0.97, "min_recall": 0.9, "ok": true} | {},
     "texts_per_item": null, "search_params": {"nprobe": 16}, "n_images": 64, "n_texts": 70, "n_skipped": 0,
     "rerank": {"diffusion": {"targets": ["images"], "params": {...}, "tuned": {"images": {...}}}},
     "fingerprint": "...", "command": "xmr index ...",
     "rerank_stale": ["diffusion"], "edits": [{"add": "new.jsonl", "images": 3, "texts": 2, "skipped": 0,
     "command": "..."}, {"remove": ["id1"], "images": 1, "texts": 0, "command": "..."}]}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from xmr.errors import Call, Param, XmrError
from xmr.modality import TARGETS, Target
from xmr.utils.io import load_json_object, save_json

INDEX_RUN_FILE = "index_run.json"
#: the key of the recall check's value, ``text_to_image_recall@<k>``
RECALL_KEY = "text_to_image_recall@"

_REQUIRED = object()
_KINDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null"}


class _Fields:
    """One JSON object of the file being read: typed look-ups whose errors name the file and the field."""

    def __init__(self, raw: object, path: Path, prefix: str = "") -> None:
        self.path, self.prefix = path, prefix
        if not isinstance(raw, dict):
            raise self.bad(prefix.rstrip(".") or "(the file)", raw, "an object")
        self.raw: dict[str, object] = raw

    def bad(self, name: str, value: object, expected: str) -> XmrError:
        shown = json.dumps(value)
        return XmrError("{path}: field {field} is {value}, expected {expected}",
                        path=str(self.path), field=repr(name),
                        value=shown if len(shown) <= 40 else shown[:37] + "...", expected=expected)

    def get(self, key: str, *kinds: type, default: object = _REQUIRED) -> object:
        """``raw[key]``, checked to be one of ``kinds`` (``float`` takes whole numbers too)."""
        if key not in self.raw:
            if default is _REQUIRED:
                raise XmrError("{path}: field {field} is missing", path=str(self.path),
                               field=repr(self.prefix + key))
            return default
        value = self.raw[key]
        if not any(_is(value, k) for k in kinds):
            raise self.bad(self.prefix + key, value, " or ".join(_KINDS[k] for k in kinds))
        return value

    def str_(self, key: str, default: object = _REQUIRED) -> str | None:
        return cast(str | None, self.get(key, str, type(None), default=default))

    def int_(self, key: str, default: object = _REQUIRED) -> int:
        return cast(int, self.get(key, int, default=default))

    def nested(self, key: str) -> dict[str, _Fields]:
        """``raw[key]`` as an object of objects (absent: empty), each a :class:`_Fields`."""
        outer = _Fields(self.get(key, dict, default={}), self.path, f"{self.prefix}{key}.")
        return {k: _Fields(v, self.path, f"{outer.prefix}{k}.") for k, v in outer.raw.items()}

    def target(self, value: object, where: str) -> Target:
        if value not in TARGETS:
            raise self.bad(self.prefix + where, value, " or ".join(map(repr, TARGETS)))
        return value


def _is(value: object, kind: type) -> bool:
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


@dataclass(frozen=True)
class SideChoice:
    """The index one side (``images`` / ``texts``) was built as.

    Attributes:
        factory: the FAISS factory string built.
        auto: chosen by ``factory="auto"`` (:func:`xmr.index.budget.choose_index`); then ``budget``
            (bytes), ``estimated_bytes`` and ``reason`` say why.
    """

    factory: str
    auto: bool = False
    budget: int | None = None
    estimated_bytes: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, object]:
        if not self.auto:
            return {"factory": self.factory}
        return {"factory": self.factory, "auto": True, "budget": self.budget,
                "estimated_bytes": self.estimated_bytes, "reason": self.reason}

    @classmethod
    def from_json(cls, f: _Fields) -> SideChoice:
        return cls(cast(str, f.get("factory", str)), auto=cast(bool, f.get("auto", bool, default=False)),
                   budget=cast(int | None, f.get("budget", int, type(None), default=None)),
                   estimated_bytes=cast(int | None, f.get("estimated_bytes", int, type(None), default=None)),
                   reason=f.str_("reason", default=None))


@dataclass(frozen=True)
class RecallCheck:
    """The build-time text->image recall@k of a non-exact image index against exact search
    (:class:`xmr.workflows.index.CrossModalCheck`): ``ok`` when ``recall >= min_recall``."""

    k: int
    recall: float
    min_recall: float
    ok: bool

    @property
    def name(self) -> str:
        """The key it is written under: ``text_to_image_recall@<k>``."""
        return f"{RECALL_KEY}{self.k}"

    def to_json(self) -> dict[str, object]:
        return {self.name: self.recall, "min_recall": self.min_recall, "ok": self.ok}

    @classmethod
    def from_json(cls, f: _Fields) -> RecallCheck | None:
        keys = [k for k in f.raw if k.startswith(RECALL_KEY)]
        if not keys:
            return None
        k = keys[0][len(RECALL_KEY):]
        if not k.isdigit():
            raise f.bad(f.prefix + keys[0], f.raw[keys[0]], f"a key {RECALL_KEY}<k>")
        return cls(int(k), cast(float, f.get(keys[0], float)), cast(float, f.get("min_recall", float)),
                   cast(bool, f.get("ok", bool)))


@dataclass(frozen=True)
class TunedRerank:
    """A re-ranker's parameters tuned for one target (:mod:`xmr.workflows.tune`): the choice, its
    validation score and the plain (not re-ranked) score beside it."""

    split: str
    params: Mapping[str, object]
    score: float
    plain: float
    helps: bool

    def to_json(self) -> dict[str, object]:
        return {"split": self.split, "params": dict(self.params), "score": self.score, "plain": self.plain,
                "helps": self.helps}

    @classmethod
    def from_json(cls, f: _Fields) -> TunedRerank:
        return cls(cast(str, f.get("split", str)), cast(dict[str, object], f.get("params", dict)),
                   cast(float, f.get("score", float)), cast(float, f.get("plain", float)),
                   cast(bool, f.get("helps", bool)))


@dataclass(frozen=True)
class RerankBuilt:
    """The re-ranking structures one method has in the index: for which targets, with which
    parameters (the method's own, or per target the tuned ones in ``tuned``)."""

    targets: tuple[Target, ...]
    params: Mapping[str, object]
    tuned: Mapping[Target, TunedRerank] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"targets": list(self.targets), "params": dict(self.params)}
        if self.tuned:
            out["tuned"] = {t: tu.to_json() for t, tu in self.tuned.items()}
        return out

    @classmethod
    def from_json(cls, f: _Fields) -> RerankBuilt:
        targets = cast(list[object], f.get("targets", list))
        return cls(tuple(f.target(t, "targets") for t in targets), cast(dict[str, object], f.get("params", dict)),
                   {f.target(t, f"tuned.{t}"): TunedRerank.from_json(tu) for t, tu in f.nested("tuned").items()})


@dataclass(frozen=True)
class IndexChange:
    """One ``add`` or ``remove`` (:mod:`xmr.workflows.index_edit`) since the build.

    Attributes:
        kind: ``"add"`` or ``"remove"``.
        source: what was added (the manifest) or removed (the item ids).
        images, texts: how many images and texts it added or removed.
        skipped: an add's unreadable images left out (None for a remove).
    """

    kind: Literal["add", "remove"]
    source: str | tuple[str, ...]
    images: int
    texts: int
    skipped: int | None = None
    command: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {self.kind: self.source if isinstance(self.source, str) else list(self.source),
                                  "images": self.images, "texts": self.texts}
        if self.skipped is not None:
            out["skipped"] = self.skipped
        out["command"] = self.command
        return out

    @classmethod
    def from_json(cls, f: _Fields) -> IndexChange:
        kind: Literal["add", "remove"]
        source: str | tuple[str, ...]
        if "add" in f.raw:
            kind, source = "add", cast(str, f.get("add", str))
        elif "remove" in f.raw:
            ids = cast(list[object], f.get("remove", list))
            if not all(isinstance(i, str) for i in ids):
                raise f.bad(f.prefix + "remove", ids, "a list of item ids")
            kind, source = "remove", tuple(cast(list[str], ids))
        else:
            raise f.bad(f.prefix.rstrip("."), f.raw, 'an object with "add" or "remove"')
        return cls(kind, source, f.int_("images"), f.int_("texts"),
                   skipped=cast(int | None, f.get("skipped", int, type(None), default=None)),
                   command=f.str_("command", default=None))


@dataclass(frozen=True)
class IndexRun:
    """What ``index_run.json`` says of an index folder: what built it and what changed it since.

    Attributes:
        n_images, n_texts: the vectors each side's index holds now; ``n_skipped``: the items the
            builds and adds left out (listed in ``skipped.jsonl``).
        run: the run folder (absolute) that built it; ``model_id``: its model's id.
        manifest / images (+ ``recursive``) / shards: the gallery's source (one of them).
        split, texts_per_item: the build's selection (None: all).
        factory: the factory asked for (``"auto"`` included); ``chosen``: what each side was built as.
        checks: the build-time recall check of a non-exact image index (None: not measured).
        search_params: the query-time settings saved with the indexes.
        rerank: the re-ranking structures in the folder, by method; ``rerank_stale``: methods whose
            structures an edit left out (they described the old gallery).
        edits: each add / remove since the build, in order.
        fingerprint: :func:`xmr.rerank.registry.index_fingerprint` of the folder when written.
        command: the command line that built it.
        extra: keys of the file this version does not know, kept as they are.
    """

    n_images: int = 0
    n_texts: int = 0
    run: str | None = None
    model_id: str | None = None
    manifest: str | None = None
    images: str | None = None
    recursive: bool = False
    shards: str | None = None
    split: str | None = None
    factory: str | None = None
    chosen: Mapping[Target, SideChoice] = field(default_factory=dict)
    checks: RecallCheck | None = None
    texts_per_item: int | None = None
    search_params: Mapping[str, int] = field(default_factory=dict)
    n_skipped: int = 0
    rerank: Mapping[str, RerankBuilt] = field(default_factory=dict)
    rerank_stale: tuple[str, ...] = ()
    edits: tuple[IndexChange, ...] = ()
    fingerprint: str | None = None
    command: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    def edit_counts(self) -> tuple[int, int]:
        """Images added and removed by :attr:`edits`, in all."""
        return (sum(e.images for e in self.edits if e.kind == "add"),
                sum(e.images for e in self.edits if e.kind == "remove"))

    def to_json(self) -> dict[str, object]:
        """The JSON object written (``extra`` first, so that a known key always wins)."""
        out: dict[str, object] = {**self.extra, "run": self.run, "model_id": self.model_id}
        if self.manifest is not None:
            out["manifest"] = self.manifest
        if self.images is not None:
            out.update(images=self.images, recursive=self.recursive)
        if self.shards is not None:
            out["shards"] = self.shards
        out.update(split=self.split, factory=self.factory, chosen={s: c.to_json() for s, c in self.chosen.items()},
                   checks=self.checks.to_json() if self.checks else {}, texts_per_item=self.texts_per_item,
                   search_params=dict(self.search_params), n_images=self.n_images, n_texts=self.n_texts,
                   n_skipped=self.n_skipped, rerank={n: r.to_json() for n, r in self.rerank.items()},
                   fingerprint=self.fingerprint, command=self.command)
        if self.rerank_stale:
            out["rerank_stale"] = list(self.rerank_stale)
        if self.edits:
            out["edits"] = [e.to_json() for e in self.edits]
        return out

    @classmethod
    def from_json(cls, raw: object, path: str | Path) -> IndexRun:
        """The record of a parsed ``index_run.json`` (``path`` names it in errors).

        Raises:
            XmrError: a value of the wrong type or shape, naming the file and the field.
        """
        f = _Fields(raw, Path(path))
        params = _Fields(f.get("search_params", dict, default={}), f.path, "search_params.")
        stale = cast(list[object], f.get("rerank_stale", list, default=[]))
        if not all(isinstance(s, str) for s in stale):
            raise f.bad("rerank_stale", stale, "a list of method names")
        edits = cast(list[object], f.get("edits", list, default=[]))
        known = {fl.name for fl in dataclasses.fields(cls)} - {"extra"}
        return cls(
            n_images=f.int_("n_images", 0), n_texts=f.int_("n_texts", 0), run=f.str_("run", None),
            model_id=f.str_("model_id", None), manifest=f.str_("manifest", None), images=f.str_("images", None),
            recursive=cast(bool, f.get("recursive", bool, default=False)), shards=f.str_("shards", None),
            split=f.str_("split", None), factory=f.str_("factory", None),
            chosen={f.target(s, f"chosen.{s}"): SideChoice.from_json(c) for s, c in f.nested("chosen").items()},
            checks=RecallCheck.from_json(_Fields(f.get("checks", dict, default={}), f.path, "checks.")),
            texts_per_item=cast(int | None, f.get("texts_per_item", int, type(None), default=None)),
            search_params={k: params.int_(k) for k in params.raw}, n_skipped=f.int_("n_skipped", 0),
            rerank={name: RerankBuilt.from_json(r) for name, r in f.nested("rerank").items()},
            rerank_stale=tuple(cast(list[str], stale)),
            edits=tuple(IndexChange.from_json(_Fields(e, f.path, f"edits[{i}].")) for i, e in enumerate(edits)),
            fingerprint=f.str_("fingerprint", None), command=f.str_("command", None),
            extra={k: v for k, v in f.raw.items() if k not in known})


def index_run_path(folder: str | Path) -> Path:
    """Where an index folder's record is: ``<folder>/index_run.json``."""
    return Path(folder) / INDEX_RUN_FILE


def load_index_run(folder: str | Path) -> IndexRun:
    """Read the ``index_run.json`` of the index folder ``folder``.

    Raises:
        XmrError: no such file, not JSON, not an object, or a field of the wrong type (each naming the file).
    """
    path = index_run_path(folder)
    return IndexRun.from_json(load_json_object(path, "index description"), path)


def read_index_run(folder: str | Path, run_dir: str | Path) -> IndexRun:
    """:func:`load_index_run` of the index a job or a search of the run ``run_dir`` needs: its
    errors say how to build the index (``index_run`` of ``run_dir``; each edge words the call).

    Raises:
        XmrError: no index there, or a damaged record.
    """
    fix = Call("index_run", Param("run_dir", str(run_dir)))
    if not index_run_path(folder).is_file():
        raise XmrError("no index at {idx}; build one with {fix}", idx=str(folder), fix=fix)
    try:
        return load_index_run(folder)
    except XmrError as e:
        raise e.suffixed("; rebuild the index with {_fix}", _fix=fix) from None


def save_index_run(folder: str | Path, record: IndexRun) -> Path:
    """Write ``record`` as ``<folder>/index_run.json``, atomically; returns the file."""
    path = index_run_path(folder)
    save_json(path, record.to_json())
    return path
