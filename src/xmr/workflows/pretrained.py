"""Runs made from a pretrained pair with no training, and a bare folder searchable in one call.

A *pretrained pair* is an image encoder and a text encoder that embed into one space: both name it
as their :attr:`~xmr.encoders.base.Encoder.joint_space`, with features of one size
(:func:`~xmr.encoders.base.shared_space`): the two sides of ``hf-clip:PATH`` (CLIP, Radford et al.
2021: one checkpoint's image and text towers), or a zero-shot image encoder whose features are
MiniLM sentence vectors (ConSE, Norouzi et al., ICLR 2014: the probability-weighted mean of the
embeddings of its top classes' names) with ``minilm-l6``. Its cosine scores a pair as it is.

:func:`pretrained_run` writes a retrieval run of such a pair, with no data and no epoch:
``run.json`` (a :class:`~xmr.runs.RunConfig` whose ``pretrained_space`` names the space) and
``best/``, a :class:`~xmr.models.JointModel` with ``identity`` heads (the features L2-normalised,
nothing learned) whose temperature is the pair's own where it has one (``joint_temperature``: CLIP's
``1 / exp(logit_scale)``), held fixed. Evaluation, indexing, search, re-ranking and serving then work
on it as on a trained run. A pair whose sides do not share a space is refused: its cosine means nothing
until heads are trained on captions.

:func:`index_folder` takes a folder of images (no captions, no manifest) to a searchable index: the
folder's own run, ``FOLDER/.xmr`` (hidden, so a scan of the folder never reads it), made from the
day-one pair (:data:`DAY_ONE_IMAGE_ENCODER` + :data:`DAY_ONE_TEXT_ENCODER`) the first time and reused
after, then :func:`~xmr.workflows.index.index_run` of the folder into ``FOLDER/.xmr/index``. Text
queries and image queries (image -> image: the frozen image encoder's features, normalised) search it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from xmr.encoders import canonical_encoder_name, create_image_encoder, create_text_encoder
from xmr.encoders.base import Encoder, shared_space
from xmr.errors import Call, Param, XmrError
from xmr.models import JointModel, ModelConfig
from xmr.runs.base import RUN_FILE, load_run_config, save_run_config, saved_run_matches
from xmr.runs.config import RunConfig, head_settings
from xmr.runtime.device import Runtime
from xmr.training.folder import refuse_other_config
from xmr.utils.folders import exclusive_lock
from xmr.utils.io import check_writable, ensure_folder
from xmr.workflows.folder import FOLDER_RUN
from xmr.workflows.index import index_run
from xmr.workflows.index_job import IndexJob
from xmr.workflows.train import LOCK_FILE, joint_temperature

log = logging.getLogger(__name__)

#: the day-one pair: an image encoder that needs no training and no captions, and the text encoder whose
#: space it embeds into (the one place these names are written; ``index_folder`` and ``pretrained_run`` use them):
#: ConSE in MiniLM's space with A3VSE's tag baseline as a second signal (``xmr.encoders.conse_tags``; on the test
#: splits, rsum 44.6 -> 55.5 on emoji, 96.6 -> 102.2 on openclipart against ``conse-imagenet`` + ``minilm-l6``)
DAY_ONE_IMAGE_ENCODER = "conse-imagenet-tags"
DAY_ONE_TEXT_ENCODER = "minilm-l6-tags"


def pretrained_configs(image_encoder: str, text_encoder: str, manifest: str | Path | None = None
                       ) -> tuple[RunConfig, ModelConfig, tuple[Encoder, Encoder]]:
    """The run config and the model config of a run made from a pretrained pair (see the module docstring),
    and the pair's two encoders (built, weights not loaded).

    Raises:
        XmrError: an unknown encoder, one of the other modality, a pair whose sides do not share a
            space, a ``manifest`` that is not a file.
    """
    image_name, text_name = canonical_encoder_name(image_encoder), canonical_encoder_name(text_encoder)
    if manifest is not None and not Path(manifest).is_file():
        raise XmrError("{manifest}: no such manifest", manifest=Param("manifest", str(manifest)))
    image, text = create_image_encoder(image_name), create_text_encoder(text_name)
    space = shared_space(image, text)
    if space is None:
        raise XmrError("{image} and {text} do not embed into one space ({sides}), so their cosine means nothing "
                       "before training: give a pair whose sides share one (both sides of hf-clip:PATH; "
                       "{day_one_image} with {day_one_text}), or learn heads on captions with {train}",
                       image=Param("image_encoder", image_name), text=Param("text_encoder", text_name),
                       sides=_spaces(image, text), day_one_image=DAY_ONE_IMAGE_ENCODER,
                       day_one_text=DAY_ONE_TEXT_ENCODER, train=Call("train_run", Param("manifest", "M")))
    dim = int(image.dim)
    cfg = RunConfig(manifest=os.path.abspath(manifest) if manifest is not None else "", image_encoder=image_name,
                    text_encoder=text_name, head="identity", embed_dim=dim, pretrained_space=space)
    model = ModelConfig(image_encoder=image_name, text_encoder=text_name, image_dim=dim, text_dim=dim,
                        **head_settings(cfg), learn_temperature=False)
    temperature = joint_temperature({"image_encoder": image, "text_encoder": text})
    if temperature is not None:  # the pair's own (CLIP's 1 / exp(logit_scale)), else the model's default
        model = dataclasses.replace(model, init_temperature=temperature)
    return cfg, model, (image, text)


def _spaces(image: Encoder, text: Encoder) -> str:
    """Each side's space and size, for the refusal of a pair that shares none."""
    def one(e: Encoder) -> str:
        space = getattr(e, "joint_space", None)
        return f"{space or 'a space of its own'}, {int(e.dim)}-d"
    return f"image: {one(image)}; text: {one(text)}"


def pretrained_run(out_dir: str | Path, *, image_encoder: str = DAY_ONE_IMAGE_ENCODER,
                   text_encoder: str = DAY_ONE_TEXT_ENCODER, manifest: str | Path | None = None,
                   overwrite: bool = False) -> RunConfig:
    """Write a retrieval run of a pretrained pair into ``out_dir``, with no training. Returns its config.

    Args:
        out_dir: the run folder (created). Making the same run again rewrites the same files; a folder
            holding another run is refused unless ``overwrite``.
        image_encoder, text_encoder: the pair; their sides must share one space (module docstring).
        manifest: a dataset to record as the run's own (its splits are what evaluation scores and
            what an index of the run holds by default); None: none, evaluation then names one.
        overwrite: replace a run of another config at ``out_dir``.

    Raises:
        XmrError: the pair shares no space, ``out_dir`` is a file or holds another run.
    """
    out = Path(out_dir)
    if os.path.lexists(out) and not out.is_dir():
        raise XmrError("{out} exists and is not a folder; give the run a folder of its own",
                       out=Param("out_dir", str(out)))
    cfg, model_config, encoders = pretrained_configs(image_encoder, text_encoder, manifest)
    if not overwrite:
        refuse_other_config(out, saved_run_matches(out, cfg))
    for encoder in encoders:
        prepare = getattr(encoder, "ensure_data", None)  # data its first encode reads (the day-one encoder: WordNet)
        if callable(prepare):
            prepare()
    check_writable(out, "run folder")
    ensure_folder(out, "run folder")
    with exclusive_lock(out / LOCK_FILE, f"the run {out}"):
        model_id = JointModel(model_config).save(out / "best", extra={"pretrained_space": cfg.pretrained_space})
        save_run_config(out, cfg)
    log.info("run %s: %s + %s in their shared space %s, not trained (model %s)", out, cfg.image_encoder,
             cfg.text_encoder, cfg.pretrained_space, model_id)
    return cfg


@dataclass(frozen=True)
class FolderIndex:
    """:func:`index_folder`'s result.

    Attributes:
        run_dir: the run the folder was indexed with (its own, ``FOLDER/.xmr``, unless one was named).
        index_dir: the index (``run_dir/index`` unless the job named another).
        config: that run's config.
        made: the run was made by this call (else it was there and was reused).
    """

    run_dir: Path
    index_dir: Path
    config: RunConfig
    made: bool


def index_folder(images: str | Path, job: IndexJob | None = None, *, run_dir: str | Path | None = None,
                 image_encoder: str | None = None, text_encoder: str | None = None,
                 runtime: Runtime | None = None) -> FolderIndex:
    """Index a folder of images with no training and no captions, ready for text and image queries.

    Args:
        images: the folder (ids are paths relative to it; sidecar texts are read where there are any).
        job: the index build (:class:`~xmr.workflows.index_job.IndexJob`; its ``images`` is set to the
            folder, the rest as given: ``recursive``, ``factory``, ``rerank``, ``out_dir`` ...).
        run_dir: the run to index with (default ``<images>/.xmr``): reused when there, else made from the pair.
        image_encoder, text_encoder: the pair a new run is made from (default: the day-one pair,
            :data:`DAY_ONE_IMAGE_ENCODER` + :data:`DAY_ONE_TEXT_ENCODER`); given while ``run_dir``
            holds a run of another pair, refused.
        runtime: the device and precision the encoders run at (None: the CPU at fp32).

    Raises:
        XmrError: ``images`` is not a folder, the pair shares no space, ``run_dir`` holds a run of
            another pair, anything :func:`~xmr.workflows.index.index_run` refuses.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise XmrError("{images} is not a folder of images", images=Param("images", str(folder)))
    run = Path(run_dir) if run_dir is not None else folder / FOLDER_RUN
    asked = {"image_encoder": image_encoder, "text_encoder": text_encoder}
    made = not (run / RUN_FILE).is_file()
    if made and run_dir is None and not os.access(folder, os.W_OK | os.X_OK):  # a read-only folder, a mounted share
        raise XmrError("cannot write the folder's own run into {folder} (read-only); make a run elsewhere with {make}, "
                       "then index the folder with it: {index}", folder=str(folder),
                       make=Call("pretrained_run", Param("out_dir", "RUN")),
                       index=Call("index_run", Param("run_dir", "RUN"), Param("images", str(folder))))
    if made:
        cfg = pretrained_run(run, image_encoder=image_encoder or DAY_ONE_IMAGE_ENCODER,
                             text_encoder=text_encoder or DAY_ONE_TEXT_ENCODER)
    else:
        cfg = load_run_config(run, RunConfig)
        other = [Param(k, v) for k, v in asked.items()
                 if v is not None and canonical_encoder_name(v) != getattr(cfg, k)]
        if other:
            raise XmrError("{run} holds a run of {image} + {text}, not of the pair given; index with it (leave the "
                           "encoders out), or make a run of that pair elsewhere with {make} and index with that: "
                           "{index}",
                           run=str(run), image=cfg.image_encoder, text=cfg.text_encoder,
                           make=Call("pretrained_run", Param("out_dir", "RUN"), *other),
                           index=Call("index_run", Param("run_dir", "RUN"), Param("images", str(folder))))
    index_dir = index_run(run, dataclasses.replace(job or IndexJob(), images=str(folder)), runtime=runtime)
    return FolderIndex(run, Path(index_dir), cfg, made)
