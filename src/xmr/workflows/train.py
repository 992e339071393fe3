"""``xmr train``: encode a manifest's train/val splits and learn a joint space on them."""

from __future__ import annotations

import logging
from pathlib import Path

from xmr.data.manifest import select_split
from xmr.errors import XmrError
from xmr.models import ModelConfig
from xmr.text import Vocabulary
from xmr.training import EvalSet, PairSet, TrainResult, train_joint_model
from xmr.training.data import pairs_from_relevance
from xmr.utils.io import load_json, matches_saved, save_json
from xmr.workflows.features import encode_items
from xmr.workflows.run_config import RUN_FILE, RunConfig, run_encoders, run_items

log = logging.getLogger(__name__)


def train_run(config: RunConfig, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, show_progress: bool | None = None) -> TrainResult:
    """Train a joint model as described by ``config`` into ``out_dir``.

    Writes ``run.json`` (the config), the trainer's files (``best/``, ``last.pt``,
    ``history.json``) and resumes an interrupted run of the same config. A word-level text
    model (``config.text_model``) gets its vocabulary from the training split's texts; it is
    saved beside the run (``vocab.json``) and inside every checkpoint.
    """
    out = Path(out_dir)
    if (out / RUN_FILE).exists() and not overwrite and not matches_saved(load_json(out / RUN_FILE), config):
        raise XmrError(f"{out} holds a run with another config; pick a new output folder or pass overwrite")
    out.mkdir(parents=True, exist_ok=True)
    items = run_items(config)
    train_items = select_split(items, config.train_split)
    vocab = None
    if config.text_model is not None:
        vocab = Vocabulary.build(t for it in train_items for t in it.texts)
        log.info("vocabulary: %d words from the %d training items", len(vocab) - 2, len(train_items))
        vocab.save(out / "vocab.json")
    encoders = run_encoders(config, vocab)  # one pair for both splits: weights load once
    train_fs = encode_items(train_items, **encoders,  # type: ignore[arg-type]
                            cache_dir=cache_dir, show_progress=show_progress)
    val_fs = encode_items(select_split(items, config.val_split), **encoders,  # type: ignore[arg-type]
                          cache_dir=cache_dir, texts_per_item=config.eval_texts_per_item,
                          show_progress=show_progress)
    pairs = PairSet(train_fs.image_feats, train_fs.text_feats, pairs_from_relevance(train_fs.relevance),
                    train_fs.group_ids())
    # the instance loss classifies into the training groups (each group its own class)
    n_instances = int(pairs.image_groups.max()) + 1 if config.train.uses_instances else 0
    # a word-level model's "features" are id rows; the head sees the model's output
    text_dim = config.text_model.out_dim if config.text_model is not None else encoders["text_encoder"].dim
    model_config = ModelConfig(image_encoder=config.image_encoder, text_encoder=config.text_encoder,
                               image_dim=encoders["image_encoder"].dim, text_dim=text_dim,
                               embed_dim=config.embed_dim, head=config.head, hidden_dim=config.hidden_dim,
                               dropout=config.dropout, n_instances=n_instances,
                               similarity=config.similarity, two_branch=config.two_branch,
                               text_model=None if config.text_model is None else config.text_model.to_dict())
    val = EvalSet(val_fs.image_feats, val_fs.text_feats, val_fs.relevance)
    log.info("training %s on %d pairs (%d images, %d texts); validating on %d images",
             config.train.loss, len(pairs.pairs), len(train_fs.items), len(train_fs.texts), len(val_fs.items))
    save_json(out / RUN_FILE, config)
    return train_joint_model(pairs, val, model_config, config.train, out_dir=out, overwrite=overwrite, vocab=vocab)

