"""``xmr index``: embed a gallery with a trained run and index its images and texts with FAISS.

Index folder layout (default ``<run>/index``)::

    images/            index.faiss + index.json (IndexConfig with the model id and dimension)
    texts/             the same for the gallery's distinct texts
    gallery.jsonl      the indexed items (image index id = line number)
    texts.json         the indexed texts (text index id = position)
    index_run.json     what built it: run, model id, manifest, split, factory, command

The folder is built beside the target and swapped in at the end, so an interrupted build leaves
the previous index intact.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from xmr.data.manifest import write_manifest
from xmr.index import Index, create_index
from xmr.models import load_model
from xmr.utils.io import save_json
from xmr.workflows.features import encode_items
from xmr.workflows.run_config import load_run_config, run_encoders, run_items

log = logging.getLogger(__name__)


def _make_index(factory: str, dim: int, model_id: str) -> Index:
    if factory == "Flat":
        return create_index("flat", dim=dim, model_id=model_id)
    return create_index("faiss", dim=dim, factory=factory, model_id=model_id)


def index_run(run_dir: str | Path, *, manifest: str | None = None, split: str | None = None,
              factory: str = "Flat", texts_per_item: int | None = None, out_dir: str | Path | None = None,
              cache_dir: str | Path | None = None,
              command: str | None = None, show_progress: bool | None = None) -> Path:
    """Build the gallery index of a run. Returns the index folder.

    Args:
        run_dir: a folder made by ``xmr train``.
        manifest: the gallery manifest (default: the run's own).
        split: index only this split (default: every item).
        factory: a FAISS index_factory string; ``Flat`` is exact search.
        texts_per_item: index only each item's first texts (e.g. 1: the caption, not keywords).
        out_dir: where to write (default ``<run_dir>/index``).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = load_model(run_dir / "best")
    fs = encode_items(run_items(cfg, manifest=manifest, split=split), **run_encoders(cfg),  # type: ignore[arg-type]
                      cache_dir=cache_dir, texts_per_item=texts_per_item, allow_textless=True,
                      show_progress=show_progress)
    out = Path(out_dir) if out_dir else run_dir / "index"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        dim = model.config.embed_dim
        for name, feats, modality in (("images", fs.image_feats, "image"), ("texts", fs.text_feats, "text")):
            index = _make_index(factory, dim, model.model_id)
            if len(feats):  # a gallery of bare images has an empty text index
                index.add(model.embed_numpy(feats, modality))
            index.save(tmp / name)
        write_manifest(fs.items, tmp / "gallery.jsonl")
        save_json(tmp / "texts.json", fs.texts)
        save_json(tmp / "index_run.json", {"run": str(run_dir.resolve()), "model_id": model.model_id,
                                            "manifest": manifest or cfg.manifest, "split": split,
                                            "factory": factory, "n_images": len(fs.items),
                                            "n_texts": len(fs.texts), "command": command})
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("indexed %d images and %d texts into %s", len(fs.items), len(fs.texts), out)
    return out


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` by ``new`` with two renames; the old folder is removed only at the end."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
