"""An indexed gallery's items and texts by index id: SQLite (``gallery.sqlite``), looked up per hit.

``xmr search`` reads the rows of its hits only (one primary-key look-up each), not the whole
gallery; ``xmr index add / remove`` change rows in a copy of the file. The same interface over
lists (:class:`ListGallery`) serves folders built before the store (``gallery.jsonl`` +
``texts.json``) and galleries held in memory.

Schema (``meta.version`` 1)::

    items(id INTEGER PRIMARY KEY, item_id TEXT UNIQUE, row TEXT)     -- id = image index id; row: JSON
    texts(id INTEGER PRIMARY KEY, text TEXT UNIQUE, owner INTEGER)   -- id = text index id; owner: the
                                                                     -- first item (id) carrying it
    item_texts(item INTEGER, text INTEGER)                           -- which indexed texts each item carries

Image paths are stored relative to the store's folder when they lie under it (as manifests do).
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xmr.data.manifest import Item
from xmr.errors import XmrError
from xmr.utils.io import atomic_save_file

GALLERY_FILE = "gallery.sqlite"
VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, item_id TEXT NOT NULL UNIQUE, row TEXT NOT NULL);
CREATE TABLE texts (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE, owner INTEGER);
CREATE TABLE item_texts (item INTEGER NOT NULL, text INTEGER NOT NULL);
CREATE INDEX item_texts_by_text ON item_texts (text);
CREATE INDEX item_texts_by_item ON item_texts (item);
"""


class Gallery(abc.ABC):
    """Items and texts by index id (the interface both stores give)."""

    @abc.abstractmethod
    def item(self, i: int) -> Item:
        """The item of index id ``i``; XmrError when there is none."""

    @abc.abstractmethod
    def text(self, j: int) -> str:
        """The text of index id ``j``; XmrError when there is none."""

    @abc.abstractmethod
    def owner(self, j: int) -> int | None:
        """The first item (id) carrying text ``j``, or None."""

    @abc.abstractmethod
    def owners(self) -> dict[int, int]:
        """text id -> the first item (id) carrying it, for every text that has one."""

    @abc.abstractmethod
    def position(self, item_id: str) -> int | None:
        """The index id of the item named ``item_id``, or None."""

    @property
    @abc.abstractmethod
    def n_items(self) -> int:
        """Items in the gallery (removed ones not counted)."""

    @property
    @abc.abstractmethod
    def n_texts(self) -> int:
        """Texts in the gallery (removed ones not counted)."""

    @abc.abstractmethod
    def items_by_id(self) -> list[Item | None]:
        """Every item at its id (None where one was removed). Reads the whole gallery."""

    @abc.abstractmethod
    def texts_by_id(self) -> list[str | None]:
        """Every text at its id (None where one was removed). Reads the whole gallery."""

    @abc.abstractmethod
    def item_texts(self) -> dict[int, list[int]]:
        """item id -> ids of the indexed texts it carries. Reads the whole gallery."""


class ListGallery(Gallery):
    """A gallery in memory: items at positions 0..n-1, texts likewise (``None`` marks a removed one)."""

    def __init__(self, items: Sequence[Item | None], texts: Sequence[str | None]) -> None:
        self._items, self._texts = list(items), list(texts)
        self._owners: dict[int, int] | None = None
        self._by_name: dict[str, int] | None = None

    def item(self, i: int) -> Item:
        it = self._items[i] if 0 <= i < len(self._items) else None
        if it is None:
            raise XmrError(f"no gallery item with index id {i}")
        return it

    def text(self, j: int) -> str:
        t = self._texts[j] if 0 <= j < len(self._texts) else None
        if t is None:
            raise XmrError(f"no gallery text with index id {j}")
        return t

    def owner(self, j: int) -> int | None:
        return self.owners().get(j)

    def owners(self) -> dict[int, int]:
        if self._owners is None:
            where = {t: k for k, t in enumerate(self._texts) if t is not None}
            owners: dict[int, int] = {}
            for i, it in enumerate(self._items):
                for t in it.texts if it is not None else ():
                    k = where.get(t)
                    if k is not None:
                        owners.setdefault(k, i)
            self._owners = owners
        return self._owners

    def position(self, item_id: str) -> int | None:
        if self._by_name is None:
            self._by_name = {it.id: i for i, it in enumerate(self._items) if it is not None}
        return self._by_name.get(item_id)

    @property
    def n_items(self) -> int:
        return sum(it is not None for it in self._items)

    @property
    def n_texts(self) -> int:
        return sum(t is not None for t in self._texts)

    def items_by_id(self) -> list[Item | None]:
        return list(self._items)

    def texts_by_id(self) -> list[str | None]:
        return list(self._texts)

    def item_texts(self) -> dict[int, list[int]]:
        where = {t: k for k, t in enumerate(self._texts) if t is not None}
        return {i: [where[t] for t in dict.fromkeys(it.texts) if t in where]
                for i, it in enumerate(self._items) if it is not None}


def _row(item: Item, root: Path) -> str:
    return json.dumps(item.to_row(root), ensure_ascii=False, sort_keys=True)


def _item(row: str, root: Path, where: str) -> Item:
    try:
        d = json.loads(row)
        image = d["image"]
        return Item(id=d["id"], image=str(image if os.path.isabs(image) else root / image),
                    texts=tuple(d.get("texts") or ()), label=d.get("label"), group=d.get("group"),
                    style=d.get("style"), split=d.get("split"))
    except (ValueError, KeyError, TypeError) as e:
        raise XmrError(f"{where}: a damaged item row ({e}); rebuild the index") from None


class SqliteGallery(Gallery):
    """``gallery.sqlite`` opened read-only; safe to share between threads (one lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise XmrError(f"{self.path}: gallery store not found")
        self._root = self.path.resolve().parent
        try:
            self._db = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro&immutable=1", uri=True,
                                       check_same_thread=False)
            version = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise XmrError(f"{self.path}: not an xmr gallery store ({e})") from None
        if version is None or version[0] != str(VERSION):
            raise XmrError(f"{self.path}: unsupported gallery store version {version and version[0]!r}")
        self._lock = threading.Lock()

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            try:
                row = self._db.execute(sql, args).fetchone()
            except sqlite3.DatabaseError as e:
                raise XmrError(f"{self.path}: {e}") from None
        return tuple(row) if row is not None else None

    def _all(self, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return [tuple(r) for r in self._db.execute(sql).fetchall()]
            except sqlite3.DatabaseError as e:
                raise XmrError(f"{self.path}: {e}") from None

    def item(self, i: int) -> Item:
        row = self._one("SELECT row FROM items WHERE id = ?", (int(i),))
        if row is None:
            raise XmrError(f"{self.path}: no item with index id {i}; the index folder is damaged: rebuild it")
        return _item(str(row[0]), self._root, f"{self.path} item {i}")

    def text(self, j: int) -> str:
        row = self._one("SELECT text FROM texts WHERE id = ?", (int(j),))
        if row is None:
            raise XmrError(f"{self.path}: no text with index id {j}; the index folder is damaged: rebuild it")
        return str(row[0])

    def owner(self, j: int) -> int | None:
        row = self._one("SELECT owner FROM texts WHERE id = ?", (int(j),))
        return int(row[0]) if row is not None and row[0] is not None else None

    def owners(self) -> dict[int, int]:
        return {int(j): int(o) for j, o in self._all("SELECT id, owner FROM texts WHERE owner IS NOT NULL")}

    def position(self, item_id: str) -> int | None:
        row = self._one("SELECT id FROM items WHERE item_id = ?", (item_id,))
        return int(row[0]) if row is not None else None

    @property
    def n_items(self) -> int:
        row = self._one("SELECT COUNT(*) FROM items", ())
        return int(row[0]) if row else 0

    @property
    def n_texts(self) -> int:
        row = self._one("SELECT COUNT(*) FROM texts", ())
        return int(row[0]) if row else 0

    def items_by_id(self) -> list[Item | None]:
        rows = self._all("SELECT id, row FROM items ORDER BY id")
        out: list[Item | None] = [None] * (int(rows[-1][0]) + 1 if rows else 0)
        for i, row in rows:
            out[int(i)] = _item(str(row), self._root, f"{self.path} item {i}")
        return out

    def texts_by_id(self) -> list[str | None]:
        rows = self._all("SELECT id, text FROM texts ORDER BY id")
        out: list[str | None] = [None] * (int(rows[-1][0]) + 1 if rows else 0)
        for j, t in rows:
            out[int(j)] = str(t)
        return out

    def item_texts(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, j in self._all("SELECT item, text FROM item_texts ORDER BY item, rowid"):
            out.setdefault(int(i), []).append(int(j))
        return out

    def close(self) -> None:
        self._db.close()


def write_gallery(path: str | os.PathLike[str], items: Mapping[int, Item], texts: Mapping[int, str],
                  item_texts: Mapping[int, Sequence[int]], *, base: str | os.PathLike[str] | None = None,
                  remove_items: Iterable[int] = (), remove_texts: Iterable[int] = ()) -> Path:
    """Write ``gallery.sqlite`` atomically: a copy of ``base`` (when given) with ``remove_*`` deleted
    and ``items`` / ``texts`` / ``item_texts`` added; without ``base``, just the given rows.

    Owners are recomputed for every text that gains or loses a carrier: the smallest item id
    carrying it.
    """
    path = Path(path)
    root = path.resolve().parent

    def write(tmp: str) -> None:
        if base is not None:
            shutil.copyfile(base, tmp)
        db = sqlite3.connect(tmp)
        try:
            if base is None:
                db.executescript(_SCHEMA)
                db.execute("INSERT INTO meta VALUES ('format', 'xmr.gallery'), ('version', ?)", (str(VERSION),))
            gone_items = [int(i) for i in remove_items]
            touched = {int(j) for j in remove_texts}
            db.executemany("DELETE FROM texts WHERE id = ?", [(j,) for j in touched])
            for i in gone_items:
                touched.update(int(r[0]) for r in db.execute("SELECT text FROM item_texts WHERE item = ?", (i,)))
            db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in gone_items])
            db.executemany("DELETE FROM item_texts WHERE item = ?", [(i,) for i in gone_items])
            db.executemany("DELETE FROM item_texts WHERE text = ?", [(j,) for j in remove_texts])
            db.executemany("INSERT INTO items VALUES (?, ?, ?)",
                           [(int(i), it.id, _row(it, root)) for i, it in items.items()])
            db.executemany("INSERT INTO texts VALUES (?, ?, NULL)", [(int(j), t) for j, t in texts.items()])
            db.executemany("INSERT INTO item_texts VALUES (?, ?)",
                           [(int(i), int(j)) for i, js in item_texts.items() for j in js])
            touched.update(int(j) for js in item_texts.values() for j in js)
            db.executemany("UPDATE texts SET owner = (SELECT MIN(item) FROM item_texts WHERE text = ?) WHERE id = ?",
                           [(j, j) for j in touched])
            db.commit()
        except sqlite3.IntegrityError as e:
            raise XmrError(f"{path}: {e} (an item id or text already in the gallery)") from None
        finally:
            db.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

    atomic_save_file(path, write)
    return path


def open_gallery(index_dir: str | os.PathLike[str], hint: str = "rebuild the index") -> Gallery:
    """The gallery of an index folder: ``gallery.sqlite``, or the lists of a folder built before it
    (``hint``: what a damaged folder's message tells the user to do)."""
    index_dir = Path(index_dir)
    if (index_dir / GALLERY_FILE).is_file():
        return SqliteGallery(index_dir / GALLERY_FILE)
    from xmr.data.manifest import read_manifest
    from xmr.utils.io import load_json

    items = read_manifest(index_dir / "gallery.jsonl")
    texts = load_json(index_dir / "texts.json")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise XmrError(f"{index_dir / 'texts.json'}: not a list of texts; {hint}")
    return ListGallery(items, texts)
