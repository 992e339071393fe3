"""``xmr train --task composed`` / ``xmr eval --task composed``; the searcher is :mod:`.searcher`.

A composed run learns f_compose on a composed dataset (a manifest of images + a triplet file,
:mod:`xmr.data.triplets`): CSS-/CCI-like scenes (:mod:`xmr.data.scenes`), emoji or icon edits
(:mod:`xmr.data.edits`). Run folder::

    run.json         ComposedRunConfig (``"task": "composed"``)
    vocab.json       the LSTM query encoder's vocabulary (word-level text encoders only)
    best/            composed.json + model.safetensors (+ vocab.json) of the best validation epoch
    last.pt, history.json, train.json   the trainer's resume state and log
    gallery.npz      the gallery embeddings of the best model + their item ids (``xmr search``)
    eval-composed-<split>.json          ``xmr eval --task composed``
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmr.compose.model import ComposedModelConfig, load_composed_model
from xmr.compose.modules import COMPOSERS
from xmr.data.manifest import Item, read_manifest
from xmr.data.triplets import EditTriplet, read_triplets, target_identity
from xmr.encoders import create_image_encoder, create_text_encoder, encode_images, encode_texts
from xmr.encoders.regions import RegionEncoder, encode_regions
from xmr.errors import XmrError
from xmr.evaluation.composed import composed_chance
from xmr.runs.base import load_run_config, save_run_config, saved_run_matches
from xmr.tasks.composed.config import LSTM_CONFIG, ComposedRunConfig
from xmr.tasks.composed.train import (
    ComposedData,
    ComposedResult,
    evaluate_composed,
    refuse_several_processes,
    train_composed,
)
from xmr.text import Vocabulary
from xmr.text.word_ids import WordIdsEncoder
from xmr.training.folder import refuse_other_config
from xmr.utils.io import atomic_save_file, save_json
from xmr.workflows.features import feature_cache_dir

log = logging.getLogger(__name__)


@dataclass
class _Corpus:
    items: list[Item]
    triplets: list[EditTriplet]
    item_index: dict[str, int]
    identity: np.ndarray


def _corpus(cfg: ComposedRunConfig) -> _Corpus:
    items = read_manifest(cfg.manifest)
    index = {it.id: i for i, it in enumerate(items)}
    triplets = read_triplets(cfg.triplets, index)
    codes: dict[str, int] = {}
    identity = np.array([codes.setdefault(target_identity(it), len(codes)) for it in items], dtype=np.int64)
    return _Corpus(items, triplets, index, identity)


def _encode(cfg: ComposedRunConfig, corpus: _Corpus, vocab: Vocabulary | None, cache_dir: str | Path | None,
            show_progress: bool | None) -> tuple[np.ndarray, np.ndarray | None, list[str], np.ndarray, int]:
    """Image features, region features, the text list, its features and the region channel count."""
    cache = feature_cache_dir(cache_dir)
    paths = [it.image for it in corpus.items]
    img = encode_images(create_image_encoder(cfg.image_encoder), paths, cache_dir=cache, skip_bad=False,
                        show_progress=show_progress)
    regions, region_dim = None, 0
    if getattr(COMPOSERS.get(cfg.composer), "needs_regions", False):
        enc = typing.cast(RegionEncoder, create_image_encoder(cfg.region_encoder or f"{cfg.image_encoder}-regions"))
        regions = encode_regions(corpus.items, enc, cache_dir=cache, show_progress=show_progress)
        region_dim = regions.shape[2]
    texts = list(dict.fromkeys([t.text for t in corpus.triplets] + [it.texts[0] for it in corpus.items if it.texts]))
    if vocab is not None:
        feats = WordIdsEncoder(vocab, LSTM_CONFIG.length).encode_batch(texts)
    else:
        feats = encode_texts(create_text_encoder(cfg.text_encoder), texts, cache_dir=cache,
                             show_progress=show_progress).feats
    return img.feats, regions, texts, feats, region_dim


def _data(corpus: _Corpus, image: np.ndarray, regions: np.ndarray | None, texts: list[str], feats: np.ndarray,
          triplets: list[EditTriplet]) -> ComposedData:
    tix = {t: i for i, t in enumerate(texts)}
    rows = np.array([[corpus.item_index[t.source], tix[t.text], corpus.item_index[t.target]] for t in triplets],
                    dtype=np.int64).reshape(-1, 3)
    captions = np.array([tix.get(it.texts[0], -1) if it.texts else -1 for it in corpus.items], dtype=np.int64)
    return ComposedData(image, regions, feats, rows, corpus.identity, captions)


def _splits(cfg: ComposedRunConfig, corpus: _Corpus) -> dict[str, list[EditTriplet]]:
    by = {s: [t for t in corpus.triplets if t.split == s] for s in ("train", "val", "test")}
    if not by["train"]:
        raise XmrError(f"{cfg.triplets}: no training triplets (split 'train')")
    if not by["val"]:  # hold out a seeded share of the training triplets
        rng = np.random.default_rng(cfg.train.seed)
        pick = set(rng.choice(len(by["train"]), max(1, int(round(cfg.val_fraction * len(by["train"])))),
                              replace=False).tolist())
        by["val"] = [t for i, t in enumerate(by["train"]) if i in pick]
        by["train"] = [t for i, t in enumerate(by["train"]) if i not in pick]
    return by


def train_composed_run(cfg: ComposedRunConfig, out_dir: str | Path, *, cache_dir: str | Path | None = None,
                       overwrite: bool = False, show_progress: bool | None = None) -> ComposedResult:
    """Train a composed model as ``cfg`` says into ``out_dir`` (resumes an unfinished run; one process)."""
    refuse_several_processes()  # before any work
    out = Path(out_dir)
    if not overwrite:
        refuse_other_config(out, saved_run_matches(out, cfg))
    out.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(cfg)
    splits = _splits(cfg, corpus)
    vocab = None
    if cfg.uses_word_model:
        # training modification texts and every image caption (a caption word never trained keeps its
        # random vector, which is no more informed than <unk>)
        vocab = Vocabulary.build([t.text for t in splits["train"]] + [it.texts[0] for it in corpus.items if it.texts])
        vocab.save(out / "vocab.json")
    image, regions, texts, feats, region_dim = _encode(cfg, corpus, vocab, cache_dir, show_progress)
    text_cfg = LSTM_CONFIG if vocab is not None else None
    model_cfg = ComposedModelConfig(composer=cfg.composer, in_joint=cfg.in_joint, image_dim=image.shape[1],
                                    text_dim=text_cfg.out_dim if text_cfg else feats.shape[1], embed_dim=cfg.embed_dim,
                                    region_dim=region_dim, loss=cfg.loss,
                                    text_model=text_cfg.to_dict() if text_cfg else None)
    save_run_config(out, cfg)
    log.info("composed %s%s: %d train / %d val triplets over %d images", cfg.composer,
             " in Joint" if cfg.in_joint else "", len(splits["train"]), len(splits["val"]), len(corpus.items))
    res = train_composed(_data(corpus, image, regions, texts, feats, splits["train"]),
                         _data(corpus, image, regions, texts, feats, splits["val"]), model_cfg, cfg.train,
                         out_dir=out, vocab=vocab, overwrite=overwrite)
    gallery = res.model.numpy("embed_gallery", image)
    ids = np.array([it.id for it in corpus.items])

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare temp name
            np.savez(f, emb=gallery, model_id=res.model.model_id, ids=ids)

    atomic_save_file(out / "gallery.npz", write)
    return res


def evaluate_composed_run(run_dir: str | Path, *, split: str = "test", cache_dir: str | Path | None = None,
                          command: str | None = None, show_progress: bool | None = None) -> dict[str, float]:
    """Composed R@1/10/50 of the run's best model on ``split``; written to ``eval-composed-<split>.json``."""
    run = Path(run_dir)
    cfg = load_run_config(run, ComposedRunConfig)
    model = load_composed_model(run / "best")
    corpus = _corpus(cfg)
    splits = _splits(cfg, corpus)
    if split not in splits or not splits[split]:
        raise XmrError(f"{cfg.triplets} has no {split!r} triplets")
    image, regions, texts, feats, _ = _encode(cfg, corpus, model.vocab, cache_dir, show_progress)
    data = _data(corpus, image, regions, texts, feats, splits[split])
    metrics = evaluate_composed(model, data)
    chance = composed_chance(data.identity[data.triplets[:, 2]], data.identity, exclude=data.triplets[:, 0])
    save_json(run / f"eval-composed-{split}.json", {"split": split, "metrics": metrics, "chance": chance,
                                                   "model_id": model.model_id, "command": command})
    return {**metrics, **{f"chance/{k}": v for k, v in chance.items()}}


__all__ = ["train_composed_run", "evaluate_composed_run"]
