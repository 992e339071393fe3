"""``xmr train``: encode a manifest's train/val splits and learn a joint space on them."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from pathlib import Path

import numpy as np

from xmr.data.manifest import Item, select_split, write_manifest
from xmr.data.readers import read_items
from xmr.data.sparse import sparsify
from xmr.encoders import ImageEncoder, TextEncoder, encode_images
from xmr.encoders.augment import AugmentConfig, AugmentedView
from xmr.errors import Param, XmrError
from xmr.models import ModelConfig
from xmr.runs.base import save_run_config, saved_run_matches
from xmr.runs.config import RunConfig, RunEncoders, head_settings, run_encoders, run_items
from xmr.runs.paper_features import FinetuneConfig
from xmr.runtime.device import Runtime
from xmr.semantics.labeller import ImageNetLabeller
from xmr.text import Vocabulary
from xmr.training import EvalSet, PairSet, TrainResult, train_joint_model
from xmr.training.data import pairs_from_relevance
from xmr.training.distributed import check_shared_folder, current_world
from xmr.training.execution import ExecutionConfig
from xmr.training.folder import refuse_other_config
from xmr.utils.folders import exclusive_lock
from xmr.utils.io import check_writable, ensure_folder, save_json
from xmr.workflows.features import SKIPPED_FILE, FeatureSet, encode_items, feature_cache_dir, write_skipped
from xmr.workflows.folder import no_captions_hint
from xmr.workflows.imagine import generative_inputs
from xmr.workflows.pseudo_texts import make_pseudo_items

log = logging.getLogger(__name__)

LOCK_FILE = ".xmr-train.lock"  # held while a process trains into the run folder


def train_run(config: RunConfig, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, show_progress: bool | None = None,
              labeller: ImageNetLabeller | None = None, skip_bad: bool = False,
              runtime: Runtime | None = None, execution: ExecutionConfig | None = None) -> TrainResult:
    """Train a joint model as described by ``config`` into ``out_dir``.

    Writes ``run.json`` (the config), the trainer's files (``best/``, ``last.pt``,
    ``history.json``) and resumes an interrupted run of the same config.

    * A word-level text model (``config.text_model``) gets its vocabulary from the training
      texts (pseudo-texts included); it is saved beside the run (``vocab.json``) and inside
      every checkpoint.
    * ``config.sparse.spec`` thins the training split (``sparse.json`` records which images kept
      texts); training images left without texts are un-annotated. With
      ``config.sparse.pseudo_texts`` they are paired with pseudo-texts (``pseudo_texts.jsonl``, made
      by ``labeller``; None: the ImageNet labeller) and trained on as A3VSE's pseudo pairs.
    * An unreadable image (or a bad manifest row) is refused unless ``skip_bad``; then the
      items left out are listed in ``skipped.jsonl``.
    * ``runtime``: the device and precision the heads train at (None: the CPU at fp32); the features are
      encoded and cached as without it (its ``loader_workers`` read the images).
    * ``execution``: how the steps run (micro-batches, gradient checkpointing, streamed rows:
      :class:`~xmr.training.execution.ExecutionConfig`); the same run, in less memory.
    """
    out = Path(out_dir)
    if os.path.lexists(out) and not out.is_dir():
        raise XmrError("{out} exists and is not a folder; give the run a folder of its own",
                       out=Param("out_dir", str(out)))
    if not overwrite:
        refuse_other_config(out, saved_run_matches(out, config))
    check_writable(out, "run folder")
    ensure_folder(out, "run folder")
    world = current_world()  # several processes: rank 0 holds the lock and encodes, the others then read its cache
    if not world.is_main:
        world.barrier()  # (rank 0's is in _train_locked, once the features are cached)
        check_shared_folder(world, out / "run.json")  # several machines: rank 0's folder and cache, shared
    with exclusive_lock(out / LOCK_FILE, f"the run {out}") if world.is_main else contextlib.nullcontext():
        return _train_locked(config, out, cache_dir=cache_dir, overwrite=overwrite, show_progress=show_progress,
                             labeller=labeller, skip_bad=skip_bad, runtime=runtime, execution=execution)


def _train_locked(config: RunConfig, out: Path, *, cache_dir: str | Path | None, overwrite: bool,
                  show_progress: bool | None, labeller: ImageNetLabeller | None, skip_bad: bool,
                  runtime: Runtime | None = None, execution: ExecutionConfig | None = None) -> TrainResult:
    items = run_items(config, skip_bad=skip_bad)
    sparse = config.sparse
    if sparse is not None and sparse.spec is not None:
        corpus = sparsify(items, sparse.spec, seed=config.train.seed, split=config.train_split,
                          by_group=sparse.by_group)
        items = list(corpus.items)
        save_json(out / "sparse.json", corpus.summary())
        log.info("sparse %s: %d training images keep %d texts, %d are un-annotated", sparse.spec,
                 len(corpus.annotated), corpus.n_pairs, len(corpus.unannotated))
    train_items = [it for it in select_split(items, config.train_split) if it.texts]
    if not train_items:
        if not any(it.texts for it in items):  # a folder without captions: say what can be done with it
            hint, fields = no_captions_hint(items)
            raise XmrError("none of the {n} images of {manifest} has a text, so there is nothing to learn a joint "
                           "space from; " + hint, n=len(items), manifest=config.manifest, **fields)
        raise XmrError(f"split {config.train_split!r} of {config.manifest} has no annotated training items")
    extra_items, extra_weight = extra_training_items(config, skip_bad=skip_bad)
    train_items += extra_items
    pseudo_items: list[Item] = []
    if sparse is not None and sparse.pseudo_texts is not None:
        unannotated = [it for it in select_split(items, config.train_split) if not it.texts]
        if not unannotated:
            raise XmrError("pseudo-texts need un-annotated training images; thin the training split with sparse")
        pseudo_items = make_pseudo_items(unannotated, sparse.pseudo_texts, cache_dir=cache_dir, labeller=labeller)
        write_manifest(pseudo_items, out / "pseudo_texts.jsonl")
    vocab = None
    if config.text_model is not None:
        vocab = Vocabulary.build(t for it in [*train_items, *pseudo_items] for t in it.texts)
        log.info("vocabulary: %d words from %d training texts", len(vocab) - 2,
                 sum(len(it.texts) for it in [*train_items, *pseudo_items]))
        vocab.save(out / "vocab.json")
    # one pair for all item sets (weights load once), on the runtime's device at fp32 whatever the heads train
    # at (the caches keep fp32 features); the runtime's image-reading workers read their images
    readers = dataclasses.replace(runtime, precision="fp32") if runtime is not None else None
    encoders = run_encoders(config, vocab, readers)
    encode = functools.partial(encode_items, **encoders, cache_dir=cache_dir, show_progress=show_progress,
                               skip_bad=skip_bad)
    train_fs = encode(train_items)
    val_fs = encode(select_split(items, config.val_split), texts_per_item=config.eval_texts_per_item)
    views = augmented_views(train_fs, encoders["image_encoder"], config.augment, cache_dir=cache_dir,
                            show_progress=show_progress) if config.augment.views else None
    pairs = _pair_set(train_fs, extra_weight, views)
    pseudo_fs = encode(pseudo_items) if pseudo_items else None
    pseudo = _pair_set(pseudo_fs) if pseudo_fs is not None else None
    skipped = [s for fs in (train_fs, val_fs, pseudo_fs) if fs is not None for s in fs.skipped]
    if skipped:
        write_skipped(out / SKIPPED_FILE, skipped)
    # the instance loss classifies into the training groups (each group its own class)
    n_instances = int(pairs.image_groups.max()) + 1 if config.train.components.instance is not None else 0
    # fine-tuning: an encoder that feeds a trainable tail declares it; the head sees the tail's output
    image_dim, image_tail = _tail_of(encoders["image_encoder"], config.image_encoder)
    if image_tail is not None:
        image_tail["freeze_bn"] = config.finetune.freeze_bn if config.finetune is not None else FinetuneConfig.freeze_bn
    text_dim, text_tail = _tail_of(encoders["text_encoder"], config.text_encoder)
    if config.text_model is not None:  # a word-level model's "features" are id rows; the head sees its output
        text_dim = config.text_model.out_dim
    if text_tail is not None:
        _warn_long_texts(encoders["text_encoder"], train_fs.texts)
    try:
        model_config = ModelConfig(image_encoder=config.image_encoder, text_encoder=config.text_encoder,
                                   image_dim=image_dim, text_dim=text_dim, image_tail=image_tail, text_tail=text_tail,
                                   n_instances=n_instances, **head_settings(config),
                                   text_model=None if config.text_model is None else config.text_model.to_dict(),
                                   image_regions=int(getattr(encoders["image_encoder"], "n_regions", 0)))
    except ValueError as e:  # an architecture the encoders cannot feed
        raise XmrError(f"invalid model for {config.image_encoder} / {config.text_encoder}: {e}") from None
    start = joint_temperature(encoders)
    if start is not None:  # both sides of one pretrained joint model: start at its own temperature
        model_config = dataclasses.replace(model_config, init_temperature=start)
    uses_gen = config.train.components.generative is not None
    gen = generative_inputs(config, train_fs, show_progress=show_progress) if uses_gen else None
    if gen is not None:
        model_config = dataclasses.replace(model_config, **gen.model_fields)  # type: ignore[arg-type]  # dict fields
    val = EvalSet(val_fs.image_feats, val_fs.text_feats, val_fs.relevance)
    log.info("training %s on %d pairs (%d images, %d texts)%s; validating on %d images", config.train.loss,
             len(pairs.pairs), len(train_fs.items), len(train_fs.texts),
             f" + {len(pseudo.pairs)} pseudo pairs" if pseudo is not None else "", len(val_fs.items))
    if current_world().is_main:
        save_run_config(out, config)
        current_world().barrier()  # the other processes start now, with every feature in the cache
    return train_joint_model(pairs, val, model_config, config.train, out_dir=out, overwrite=overwrite, vocab=vocab,
                             pseudo=pseudo, caption_vocab=gen.caption_vocab if gen is not None else None,
                             generative=gen.data if gen is not None else None, runtime=runtime,
                             execution=execution)


def _tail_of(encoder: ImageEncoder | TextEncoder, name: str) -> tuple[int, dict[str, object] | None]:
    """The size of the features the head sees and the model's tail spec (None: no tail) for a run's encoder:
    an encoder that feeds a trainable tail (a trunk) declares both (``model_tail``)."""
    tail = getattr(encoder, "model_tail", None)
    if tail is None:
        return int(encoder.dim), None
    dim, spec = tail(name)
    return int(dim), dict(spec)


def joint_temperature(encoders: RunEncoders) -> float | None:
    """The starting temperature when the two encoders are the two sides of one pretrained joint model
    (``hf-clip:PATH``, its trunks included: ``joint_temperature``): its own ``1 / exp(logit_scale)``,
    kept within the model's scale limit (100, so at least 0.01: the clamp would stop its gradient); else None."""
    ask = getattr(encoders["image_encoder"], "joint_temperature", None)
    temperature = ask(encoders["text_encoder"]) if ask is not None else None
    if temperature is None:
        return None
    log.info("starting temperature %.4f: the checkpoint's own", temperature)
    return min(max(float(temperature), 0.01), 1.0)


def _warn_long_texts(encoder: TextEncoder, texts: list[str]) -> None:
    """Log how many training texts a text trunk's fixed length cuts (they differ from the frozen encoder's)."""
    count = getattr(encoder, "texts_cut", None)
    cut = count(texts) if count is not None else 0
    if cut:
        log.warning("%d of %d training texts are longer than the text trunk's %d tokens and are cut there", cut,
                    len(texts), getattr(encoder, "length", 0))


def extra_training_items(config: RunConfig, *, skip_bad: bool = False) -> tuple[list[Item], dict[str, float]]:
    """The annotated items of ``config.extra_train``, and ``{item id: weight}`` of those not weighted 1.

    Source ``i`` (from 1) gets ids and groups prefixed ``+i/``, so its items never collide with the
    run's own, nor its groups merge with theirs (texts are shared: "house" in both is one text).

    Raises:
        XmrError: a source with no annotated items in its splits (naming it and the splits).
    """
    items: list[Item] = []
    weights: dict[str, float] = {}
    for i, src in enumerate(config.extra_train, start=1):
        rows = [it for it in read_items(src.manifest, skip_bad=skip_bad) if it.texts and it.split in src.splits]
        if not rows:
            raise XmrError(f"extra training source {src.manifest}: no annotated items in split(s) "
                           f"{', '.join(src.splits)}")
        tag = f"+{i}/"
        for it in rows:
            items.append(dataclasses.replace(it, id=tag + it.id, group=tag + (it.group or it.id)))
            if src.weight != 1.0:
                weights[tag + it.id] = src.weight
        log.info("extra training source %d: %s, %d items (splits %s, weight %g)", i, src.manifest, len(rows),
                 ",".join(src.splits), src.weight)
    return items, weights


def augmented_views(fs: FeatureSet, base: ImageEncoder, augment: AugmentConfig, *, cache_dir: str | Path | None,
                    show_progress: bool | None = None) -> np.ndarray:
    """The plain features of ``fs`` then its ``augment.views`` augmented views, each through the feature cache.

    Returns:
        Shape: (1 + views, n_items, dim); row 0 is ``fs.image_feats``.
    """
    paths = [it.image for it in fs.items]
    views = [fs.image_feats]
    for v in range(1, augment.views + 1):
        res = encode_images(AugmentedView(base, augment, v), paths, cache_dir=feature_cache_dir(cache_dir),
                            show_progress=show_progress)
        views.append(res.feats)
    log.info("augmented views: %d per image (%s) for %d training images", augment.views, ",".join(augment.kinds),
             len(paths))
    return np.stack(views)


def _pair_set(fs: FeatureSet, weight_of: dict[str, float] | None = None,
              image_views: np.ndarray | None = None) -> PairSet:
    pairs = pairs_from_relevance(fs.relevance)
    weights = None
    if weight_of:
        per_item = np.array([weight_of.get(it.id, 1.0) for it in fs.items])
        weights = per_item[pairs[:, 0]]
    return PairSet(fs.image_feats, fs.text_feats, pairs, fs.group_ids(), weights, image_views)
