"""A fine-tuned ``hf-clip:PATH`` run exported whole: the checkpoint with the run's tails merged in.

A run that fine-tunes a CLIP / SigLIP checkpoint keeps only its tails and the checkpoint's id
(:mod:`xmr.encoders.hf_clip_tails`); :func:`export_hf_checkpoint` writes the whole model as a
transformers folder (:mod:`xmr.encoders.hf_clip_export`), which ``hf-clip:OUT`` then serves frozen
with the run's tail features.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from xmr.encoders.base import resolve_encoder
from xmr.encoders.hf_clip import HF_CLIP, open_checkpoint
from xmr.encoders.hf_clip_export import merged_model, write_merged_checkpoint
from xmr.errors import Param, XmrError
from xmr.runs.config import load_run

log = logging.getLogger(__name__)


def export_hf_checkpoint(run_dir: str | Path, hf_checkpoint: str | Path, *, overwrite: bool = False) -> Path:
    """Write the run's fine-tuned checkpoint, whole, as a transformers folder at ``hf_checkpoint``.

    The run must fine-tune the image or text tower (or both) of one ``hf-clip:PATH`` checkpoint; the
    towers it left frozen are the checkpoint's own, ``logit_scale`` is the run's learned one. The
    folder gives the tails' features, i.e. the run's space before its heads (with identity heads, the
    run's own space).

    Raises:
        XmrError: no fine-tuned hf-clip tower, two checkpoints, a changed checkpoint (the run's tails
            are refused on it), or ``hf_checkpoint`` existing without ``overwrite``.
    """
    run_dir, out = Path(run_dir), Path(hf_checkpoint)
    cfg, model = load_run(run_dir)
    tails = {"image": model.image_tail, "text": model.text_tail}
    names = {side: getattr(cfg, f"{side}_encoder") for side, tail in tails.items() if tail is not None}
    if not names:
        raise XmrError(f"the run {run_dir} fine-tunes no encoder: there is no fine-tuned checkpoint to export")
    for side, name in names.items():
        if resolve_encoder(name)[0] is not HF_CLIP:
            raise XmrError(f"the run {run_dir} fine-tunes its {side} encoder {name}, not an {HF_CLIP.pattern} "
                           "checkpoint: only those export as a transformers folder")
    checkpoints = {name.partition(":")[2] for name in names.values()}
    if len(checkpoints) > 1:
        raise XmrError(f"the run {run_dir} fine-tunes two checkpoints ({', '.join(sorted(checkpoints))}); one "
                       "transformers folder holds one")
    if os.path.lexists(out) and not overwrite:
        raise XmrError("{out} exists; give {fix} to replace it", out=str(out), fix=Param("overwrite", True))
    ckpt = open_checkpoint(checkpoints.pop())
    merged = merged_model(ckpt, tails, float(model.log_logit_scale.detach()))
    write_merged_checkpoint(ckpt, merged, out)
    log.info("wrote %s: %s with the run's fine-tuned %s", out, ckpt.path, " and ".join(names))
    return out
