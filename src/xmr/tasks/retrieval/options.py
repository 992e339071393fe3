"""The ``retrieval`` task's options: which ``xmr train`` option fills which config field, the options
of ``xmr train``, ``xmr eval`` and ``xmr search``, and the run config built from those given."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xmr.errors import Param, XmrError
from xmr.tasks.base import OptionParser, Options, pick
from xmr.tasks.options import (
    FieldMap,
    SearchOptions,
    add_encoders,
    add_optimisation,
    add_rerank,
    add_skip_bad,
    param_default,
    with_defaults,
)
from xmr.utils.argtypes import Number, count, count_or_all, non_negative, positive, positive_int

if TYPE_CHECKING:
    from xmr.runs import RunConfig
    from xmr.text import TextEncoderConfig

#: option dest -> field of RunConfig / TrainConfig / TextEncoderConfig / AugmentConfig (RUN_FIELDS and TRAIN_FIELDS:
#: the flat names that RunConfig.from_flat / TrainConfig.from_flat read)
RUN_FIELDS = {"image_encoder": "image_encoder", "text_encoder": "text_encoder", "train_split": "train_split",
              "val_split": "val_split", "eval_texts_per_item": "eval_texts_per_item", "embed_dim": "embed_dim",
              "head": "head", "hidden_dim": "hidden_dim", "similarity": "similarity", "two_branch": "two_branch",
              "image_head": "image_head", "sparse": "sparse", "pseudo_texts": "pseudo_texts",
              "finetune_image_blocks": "finetune_image_blocks", "finetune_text_layers": "finetune_text_layers",
              "finetune_text_length": "finetune_text_length"}
TRAIN_FIELDS = {"loss": "loss", "margin": "margin", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                "patience": "patience", "vse0_warmup": "vse0_warmup_epochs", "seed": "seed", "then": "then",
                "stage1_epochs": "stage1_epochs", "rank_loss": "rank_loss", "adversarial": "adversarial",
                "steps_per_epoch": "steps_per_epoch", "grad_clip": "grad_clip", "finetune_lr": "finetune_lr",
                "layer_lr_decay": "layer_lr_decay",
                "ema": "ema_decay", "cross_style": "cross_style", "generative": "generative",
                "caption_xe_epochs": "caption_xe_epochs"}
TEXT_MODEL_FIELDS = {"text_length": "length", "word_vectors": "init", "text_pool": "pool"}
AUGMENT_FIELDS = {"augment_views": "views", "augment": "kinds"}
#: option dest -> field of ExecutionConfig: how the steps run, not the run's config (a resume may change them)
EXECUTION_FIELDS = {"micro_batch": "micro_batch", "grad_checkpointing": "checkpointing",
                    "stream_batches": "stream_batches"}


def train_fields() -> FieldMap:
    """``{config dataclass: {option dest: field}}`` of ``xmr train`` (the help's defaults come from it)."""
    from xmr.encoders.augment import AugmentConfig
    from xmr.runs import RunConfig
    from xmr.text import TextEncoderConfig
    from xmr.training import TrainConfig
    from xmr.training.execution import ExecutionConfig

    return {**RunConfig.fields_by_class(RUN_FIELDS), **TrainConfig.fields_by_class(TRAIN_FIELDS),
            TextEncoderConfig: TEXT_MODEL_FIELDS, AugmentConfig: AUGMENT_FIELDS, ExecutionConfig: EXECUTION_FIELDS}


def add_train_options(parser: OptionParser) -> None:
    """``xmr train``'s options of a retrieval run (each default from its config field)."""
    add = with_defaults(parser, train_fields,
                        {*RUN_FIELDS, *TRAIN_FIELDS, *TEXT_MODEL_FIELDS, *AUGMENT_FIELDS, *EXECUTION_FIELDS})
    add("extra_train", nargs="*", metavar="EXTRA",
        help="more training manifests, each PATH[:SPLIT,...][@WEIGHT] (default splits: train; weight 1: "
             "its pairs drawn as often as the run's own), e.g. icons.jsonl:train,val,test@0.5")
    add("--image-root", help="Karpathy files: the folder holding the images")
    add_encoders(add)
    add("--word-vectors", choices=["glove", "random"],
        help="textcnn/bigru: word table from GloVe 6B-50d (needs the glove extra) or random")
    add("--no-position-shift", action="store_true",
        help="textcnn: left-align the words instead of the random-padding position shift")
    add("--text-length", type=positive_int, help="textcnn/bigru: words per text (longer are cut)")
    add("--text-pool", help="textcnn: max | avg; bigru: mean | last | attention (A3VSE's K-head token attention)")
    _add_objective_options(add)
    _add_finetune_options(add)
    add("--steps-per-epoch", type=positive_int,
        help="optimiser steps per epoch (default: one pass over the annotated pairs)")
    add("--grad-clip", type=non_negative, help="clip the gradient norm (0 = off; A3VSE: 2)")
    add("--margin", type=non_negative, help="hinge margin of the ranking losses")
    add_optimisation(add, unit="pair")
    add("--vse0-warmup", type=count, help="epochs of VSE0 before a hardest-negative loss")
    add("--head", help="linear | mlp | identity (no parameters: the encoders' own space, for hf-clip:PATH on both "
                       "sides with --embed-dim its feature size)")
    add("--hidden-dim", type=positive_int, help="MLP head width; the region-attention head's context size K'")
    add("--train-split", help="the manifest split to train on")
    add("--val-split", help="the split that picks the best epoch")
    add("--eval-texts-per-item", type=positive_int, help="texts per item used as validation queries (default: all)")
    add_skip_bad(add)
    _add_execution_options(add)


def _add_execution_options(add: Callable[..., Any]) -> None:
    """How the steps run (memory, speed): not the run's config, so a resumed run may change them."""
    add("--micro-batch", type=positive_int, metavar="N",
        help="embed each batch in micro-batches of N pairs and accumulate the exact gradient of the whole "
             "batch (GradCache): big batches in small memory, the same training (none: the whole batch at once)")
    add("--grad-checkpointing", action="store_true",
        help="recompute the fine-tuned blocks' activations in the backward pass instead of keeping them "
             "(less memory, more time)")
    add("--stream-batches", action="store_true",
        help="copy each batch's feature rows to the device as it starts (pinned memory) instead of the whole "
             "epoch's; default: on an accelerator when a row is 256 KiB or more (trunk activations, pixels)")


def _add_objective_options(add: Callable[..., Any]) -> None:
    """The objective's options: the loss, its stages, the scoring and the papers' additions."""
    add("--loss", help="infonce | vse0 | vse++ | instance")
    add("--then", metavar="OBJECTIVE",
        help="with --loss instance: 'instance+rank' after --stage1-epochs (dual-path two-stage)")
    add("--stage1-epochs", type=count, help="epochs of Stage I (instance loss only)")
    add("--rank-loss", help="the ranking loss of instance+rank")
    add("--similarity", help="how the space scores a pair: cosine | order (GXN order violation; ranking losses only)")
    add("--two-branch", type=Number(0, 1, whole=False, lo_open=True, hi_open=True), metavar="LAMBDA",
        help="GXN abstract + grounded heads scored by s* = lam s_h + (1 - lam) s_l (GXN: 0.5)")
    add("--generative", type=_generative_paths, metavar="PATHS",
        help="with --two-branch: GXN's generative paths on the grounded branch, i2t (caption decoder, "
             "XE then self-critical CIDEr-D), t2i (text-to-image GAN) or i2t,t2i (Algorithm 1)")
    add("--caption-xe-only", action="store_true",
        help="i2t: train the caption decoder on cross-entropy only (no self-critical reward)")
    add("--caption-xe-epochs", type=count,
        help="i2t: cross-entropy-only epochs before the mixed XE + CIDEr-D reward loss")
    add("--image-head", help="image-side head if not --head: region-attention | region-mean (A3VSE) | region-gpo "
                             "(VSE-infinity's GPO); they need a region image encoder such as "
                             "efficientnet-lite0-regions")
    add("--sparse", metavar="FRACxTEXTS",
        help="annotate only a seeded fraction of the training images, e.g. 0.1x1, 0.2x2, 0.5xall")
    add("--pseudo-texts", choices=["regional", "global"],
        help="pair un-annotated training images with their ImageNet labels as pseudo-texts (A3VSE)")
    add("--adversarial", action="store_true", help="A3VSE's six domain discriminators behind a gradient-reversal layer")
    add("--ema", type=Number(0, 1, whole=False, hi_open=True), metavar="DECAY",
        help="validate and keep the best checkpoint with a moving average of the weights (e.g. 0.999)")
    add("--cross-style", type=non_negative, metavar="WEIGHT",
        help="add an image-image InfoNCE between each training image and another image of its group "
             "(another style of the same emoji), with this weight (0: off)")


def _add_finetune_options(add: Callable[..., Any]) -> None:
    """Fine-tuning the encoders' last blocks / layers, and augmented views."""
    add("--finetune-image-blocks", type=count_or_all, metavar="N|all",
        help="fine-tune the last N blocks of the image encoder (efficientnet-lite0: 1..16, -lite1/-lite2: 1..21; "
             "each N >= 1 includes the head conv; hf-clip:PATH: its vision layers); the frozen trunk's output is "
             "cached once (0 = frozen encoder; "
             "all = the whole network, stem included, from the cached pixels)")
    add("--finetune-text-layers", type=count_or_all, metavar="N|all",
        help="fine-tune the last N transformer layers of the text encoder (minilm-l6: 1..6; hf-clip:PATH: its "
             "text layers); its frozen "
             "token states are cached once (all = the whole network, embeddings included, from the token ids)")
    add("--finetune-text-length", type=positive_int, metavar="TOKENS",
        help="tokens per text of the cached token states (longer texts are cut there)")
    add("--finetune-lr", type=positive, help="learning rate of the fine-tuned blocks / layers")
    add("--layer-lr-decay", type=Number(0, 1, whole=False, lo_open=True), metavar="DECAY",
        help="layer-wise lr decay of the fine-tuned blocks / layers: the k-th from the top trains at "
             "finetune-lr * DECAY^k (1 = off)")
    add("--train-bn-stats", action="store_true",
        help="let the fine-tuned blocks' BatchNorm statistics update (default: frozen at ImageNet's)")
    add("--augment-views", type=count, metavar="K",
        help="K augmented views per training image, encoded once (cached); each epoch draws the plain "
             "or one augmented view per image (0 = off)")
    add("--augment", metavar="KINDS",
        help="comma-separated augmentations of the views: crop, jitter, grey, lineart (default: all "
             "four), hflip (opt-in: a mirror image can change meaning)")


def _generative_paths(text: str) -> tuple[str, ...]:
    """argparse type: ``i2t``, ``t2i`` or ``i2t,t2i`` (GXN's generative paths)."""
    from xmr.objectives import GENERATIVE_PATHS

    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    if not paths or any(p not in GENERATIVE_PATHS for p in paths) or len(set(paths)) != len(paths):
        raise argparse.ArgumentTypeError(f"expected i2t, t2i or i2t,t2i, got {text!r}")
    return paths


def add_eval_options(parser: OptionParser) -> None:
    """``xmr eval``'s options of a retrieval run."""
    add = parser.add_argument
    add("--mode", choices=["full", "1k"], default=functools.partial(param_default, "xmr.workflows.evaluate",
                                                                     "evaluate_run", "mode"),
        help="the full set, or COCO-style 5 x 1K folds")
    add("--manifest")
    add("--texts-per-item", type=positive_int,
        help="texts per item used as queries (default: the run's eval_texts_per_item)")
    add("--out", help="results JSON (default: RUN/eval-SPLIT-MODE.json for the run's own "
                      "manifest, a name carrying the manifest for another)")
    add_skip_bad(add)
    add("--captions", action="store_true",
        help="also BLEU-1..4 / CIDEr of the top-1..5 retrieved captions (GXN Table 2) and, for a run "
             "trained with --generative i2t, of its generated captions (needs pycocoevalcap)")
    add_rerank(add, many=True)


def add_search_options(parser: OptionParser) -> None:
    """``xmr search``'s options of a retrieval run."""
    add = parser.add_argument
    add("--text", help="a text query")
    add("--image", help="an image query (a file)")
    add("--queries", metavar="FILE",
        help="many queries, one per line: a text, or an image file's path (relative to FILE's folder, "
             "then the working folder; a line that looks like a path and names no file is an error on "
             "its line; 'text:' / 'image:' force the kind); the run and index load once, images are "
             "encoded a batch at a time")
    add("--json", action="store_true",
        help="one JSON object per query: query, kind, line, hits (rank, score, id, text, image, item, "
             "label, group, style), or error")
    add("--sheet", metavar="PNG",
        help="also draw the results as a contact sheet: one row per query, its top-k images with score "
             "and first text")
    add("-k", type=positive_int, default=SearchOptions.k, help="results to show")
    add("--target", choices=["images", "texts"], default=SearchOptions.target, help="what to return")
    add("--index", help="index folder (default: RUN/index)")
    add("--exact-text", action="store_true",
        help="encode query texts with the run's own text encoder, not its faster stand-in (int8 ONNX "
             "MiniLM for minilm-l6, the same features within 1e-3 cosine, as xmr serve uses)")
    add_rerank(add, many=False)


def config_from_options(manifest: str, given: Options) -> RunConfig:
    """The :class:`~xmr.runs.RunConfig` of ``xmr train`` from the options given."""
    from xmr.encoders.augment import AugmentConfig
    from xmr.runs import RunConfig
    from xmr.runs.config import TrainSource
    from xmr.training import TrainConfig

    run = pick(given, RUN_FIELDS)
    text_model = _text_model(run.get("text_encoder"), given)
    try:
        train_options = pick(given, TRAIN_FIELDS)
        if given.get("caption_xe_only"):
            if "i2t" not in (train_options.get("generative") or ()):
                raise XmrError("{option} applies to {needs} only", option=Param("caption_xe_only"),
                               needs=Param("generative", "i2t"))
            train_options["caption_rl"] = False
        train = TrainConfig.from_flat(train_options)
        root = given.get("image_root")
        extra = tuple(TrainSource.parse(str(s)) for s in given.get("extra_train") or ())
        augment = pick(given, AUGMENT_FIELDS)
        if "kinds" in augment:
            augment["kinds"] = tuple(k.strip() for k in str(augment["kinds"]).split(",") if k.strip())
        if "kinds" in augment and not augment.get("views"):
            raise XmrError("{option} needs {needs} K (how many augmented views per image)", option=Param("augment"),
                           needs=Param("augment_views"))
        if given.get("train_bn_stats"):
            if not run.get("finetune_image_blocks"):
                raise XmrError("{option} applies to {needs} N only", option=Param("train_bn_stats"),
                               needs=Param("finetune_image_blocks"))
            run["finetune_freeze_bn"] = False
        return RunConfig.from_flat(run, manifest=os.path.abspath(manifest),
                                   image_root=os.path.abspath(str(root)) if root else None,
                                   train=train, text_model=text_model, extra_train=extra,
                                   augment=AugmentConfig(**augment))
    except XmrError as e:  # the dataclasses' own validation: a bad option value
        raise e.prefixed("invalid training option: ") from None


def execution_from_options(given: Options) -> Any:
    """The :class:`~xmr.training.execution.ExecutionConfig` of the options given (its defaults for the others)."""
    from xmr.training.execution import ExecutionConfig

    return ExecutionConfig(**{k: v for k, v in pick(given, EXECUTION_FIELDS).items() if v is not None})


def _text_model(text_encoder: Any, given: Options) -> TextEncoderConfig | None:
    """The word-level text model's config of a ``textcnn`` / ``bigru`` run, else None (its options
    are refused with any other text encoder)."""
    from xmr.text import TEXT_MODELS, TextEncoderConfig

    text_options = pick(given, TEXT_MODEL_FIELDS)
    if given.get("no_position_shift"):
        text_options["position_shift"] = False
    if text_encoder in TEXT_MODELS.names():
        seed_of = {"seed": given["seed"]} if given.get("seed") is not None else {}
        return TextEncoderConfig(kind=text_encoder, **text_options, **seed_of)
    if text_options:
        names = [d for d in TEXT_MODEL_FIELDS if given.get(d) is not None]
        names += ["no_position_shift"] if given.get("no_position_shift") else []
        fields = {f"option{i}": Param(d) for i, d in enumerate(sorted(names))}
        shown = ", ".join("{" + k + "}" for k in fields)
        raise XmrError(shown + " apply to a word-level {encoder} ({known}) only", **fields,
                       encoder=Param("text_encoder"), known=", ".join(TEXT_MODELS.names()))
    return None
