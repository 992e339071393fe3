"""GXN's generative paths in the product: their training inputs, ``xmr caption`` and ``xmr imagine``.

* :func:`generative_inputs` -- what a run with ``--generative`` trains on beside the pairs: the
  caption vocabulary and ids (i2t), each image's references (the CIDEr-D rewards), the training
  images at 64 x 64 (t2i), and the architecture of each path.
* :func:`caption_image` -- a run's captioner on one image (greedy or beam search).
* :func:`imagine_images` -- a run's generator on one text: PNGs of 64 x 64 imagined images
  (:func:`imagined_pixels` gives them as arrays).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xmr.encoders import TextEncoder
from xmr.encoders.image_io import image_to_array
from xmr.errors import Param, XmrError
from xmr.models import JointModel
from xmr.models.captioner import CaptionerConfig, caption_ids, caption_vocabulary, decode_ids
from xmr.models.generative import GenerativeHeads, load_generative
from xmr.models.image_gan import IMAGE_SIZE, GanConfig, ImageGenerator, to_pixels
from xmr.objectives.generative import GenerativeData, image_references
from xmr.runs.config import RunConfig, load_run, run_encoders
from xmr.runtime.device import CPU_FP32, Runtime
from xmr.text import Vocabulary, tokenize
from xmr.utils.io import atomic_save_file
from xmr.utils.progress import progress
from xmr.workflows.features import FeatureSet

log = logging.getLogger(__name__)

#: the longest caption the decoder is trained to write (words + the end token)
MAX_CAPTION_LEN = 40
#: images `xmr imagine` draws at once: memory stays bounded whatever ``--n`` asks (each batch is
#: written before the next is drawn)
IMAGINE_BATCH = 64


@dataclass(frozen=True)
class GenerativeInputs:
    """:func:`generative_inputs`' result: the decoder's vocabulary, the trainer's data, the model fields."""

    caption_vocab: Vocabulary | None
    data: GenerativeData
    model_fields: dict[str, dict[str, object]]


def generative_inputs(config: RunConfig, fs: FeatureSet, *, show_progress: bool | None = None) -> GenerativeInputs:
    """The generative paths' inputs for the training feature set ``fs`` of a run with ``config.train.generative``.

    The caption vocabulary is every word of the training captions; the decoder writes up to the
    longest training caption (at most :data:`MAX_CAPTION_LEN` - 1 words).
    """
    gen = config.train.components.generative
    paths = gen.paths if gen is not None else ()
    half = int(config.embed_dim) // 2
    rows = [fs.relevance.indices[fs.relevance.indptr[i]:fs.relevance.indptr[i + 1]].tolist()
            for i in range(len(fs.items))]
    vocab, ids, refs, images = None, None, None, None
    fields: dict[str, dict[str, object]] = {}
    if "i2t" in paths:
        vocab = caption_vocabulary(fs.texts)
        longest = max(len(tokenize(t)) for t in fs.texts)
        cap = CaptionerConfig(vocab_size=len(vocab), in_dim=half, max_len=min(MAX_CAPTION_LEN, longest + 1))
        ids = caption_ids(vocab, fs.texts, cap.max_len)
        refs = image_references(rows, fs.texts)
        fields["captioner"] = cap.to_dict()
        log.info("i2t: a caption vocabulary of %d words; captions of up to %d words", len(vocab) - 3, cap.max_len - 1)
    if "t2i" in paths:
        images = np.stack([image_to_array(it.image, IMAGE_SIZE)
                           for it in progress(fs.items, desc="images at 64x64", unit="img",
                                                      disable=None if show_progress is None else not show_progress)])
        fields["image_generator"] = GanConfig(cond_dim=half).to_dict()
    return GenerativeInputs(vocab, GenerativeData(caption_ids=ids, references=refs, images=images, caption_vocab=vocab),
                            fields)


def _grounded(model: JointModel, feats: np.ndarray, modality: str, runtime: Runtime | None = None) -> torch.Tensor:
    """The grounded branch's embedding of ``feats`` on ``runtime`` (None: the CPU at fp32), where the model is.
    Shape: (n, in_dim) -> (n, grounded dim)."""
    runtime = runtime or CPU_FP32
    model.eval()
    with torch.inference_mode(), runtime.autocast():
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).to(runtime.device)
        return model.embed_grounded(x, modality)


def _placed(runtime: Runtime | None, model: JointModel, heads: GenerativeHeads | None) -> Runtime:
    """The model and its generative heads on ``runtime``'s device (their weights stay fp32); the runtime."""
    runtime = runtime or CPU_FP32
    model.to(runtime.device)
    if heads is not None:
        heads.to(runtime.device)
    return runtime


def caption_image(run_dir: str | Path, image: str | Path, *, beam: int = 1, runtime: Runtime | None = None) -> str:
    """The caption a run's decoder writes for ``image`` (``beam`` 1: greedy decoding).

    ``runtime``: the device and precision the frozen image encoder, the model's grounding and the decoder
    run at (None: the CPU at fp32; a reduced precision is autocast, the weights stay fp32).

    Raises:
        XmrError: a run trained without the i2t path, an unreadable image, or a beam < 1.
    """
    if beam < 1:
        raise XmrError("{beam} must be >= 1", beam=Param("beam", beam))
    config, model = load_run(run_dir)
    heads = _heads(run_dir, model)
    if heads is None or heads.captioner is None or heads.caption_vocab is None:
        raise XmrError("{run} was trained without the i2t path: train it with {fix} to caption", run=str(run_dir),
                       fix=Param("generative", ("i2t",)))
    encoder = run_encoders(config, model.vocab, runtime)["image_encoder"]
    return captions_of(model, heads, encoder.encode_batch([encoder.load(image)]), beam=beam, runtime=runtime)[0]


def captions_of(model: JointModel, heads: GenerativeHeads, feats: np.ndarray, *, beam: int = 1,
                runtime: Runtime | None = None) -> list[str]:
    """The captions the decoder of ``heads`` writes for images' encoder features (GXN Sec. 3.3: the decoder
    reads v_l), by a beam of ``beam``, on ``runtime`` (None: the CPU at fp32). Shape: (n, image_dim) -> n."""
    assert heads.captioner is not None and heads.caption_vocab is not None
    runtime = _placed(runtime, model, heads)
    v_l = _grounded(model, feats, "image", runtime)
    with torch.inference_mode(), runtime.autocast():
        rows = heads.captioner.beam_search(v_l, beam=beam)
    return [decode_ids(heads.caption_vocab, ids) for ids in rows]


def _heads(run_dir: str | Path, model: JointModel) -> GenerativeHeads | None:
    """The generative heads a run's best checkpoint keeps beside its model (None: trained without them)."""
    return load_generative(Path(run_dir) / "best", model.config)


def imagine_images(run_dir: str | Path, text: str, out: str | Path, *, n: int = 4, seed: int = 0,
                   mean: bool = False, batch_size: int = IMAGINE_BATCH, runtime: Runtime | None = None) -> list[Path]:
    """Write ``n`` images a run's generator draws for ``text``: ``out`` itself for one, else ``out``'s
    stem + ``-1``, ``-2``, ... (PNG, 64 x 64). ``mean`` uses the condition's mean (no CA sample).
    They are drawn ``batch_size`` at a time from one seeded generator, each batch written before
    the next (so the first ``batch_size`` images are the same for any ``n >= batch_size``).
    ``runtime``: the device and precision the frozen text encoder, the grounding and the generator run at
    (None: the CPU at fp32); the seeded noise is drawn on the CPU whatever the device, so a seed draws the
    same images everywhere (within the device's rounding).

    Raises:
        XmrError: an empty text, a run trained without the t2i path, or ``n`` < 1.
    """
    if not text.strip():
        raise XmrError("{text} is empty: give the sentence to imagine", text=Param("text"))
    if n < 1 or batch_size < 1:
        raise XmrError("{n} and the batch size ({batch_size}) must be >= 1", n=Param("n", n), batch_size=batch_size)
    config, model = load_run(run_dir)
    heads = _heads(run_dir, model)
    _generator(heads, str(run_dir))  # refused before the encoder loads
    encoder = run_encoders(config, model.vocab, runtime)["text_encoder"]
    out = Path(out)
    paths = [out] if n == 1 else [out.with_name(f"{out.stem}-{i + 1}{out.suffix or '.png'}") for i in range(n)]
    gen = torch.Generator().manual_seed(seed)
    for start in progress(range(0, n, batch_size), desc="imagining", unit="batch", disable=n <= batch_size or None):
        images = imagined_pixels(model, heads, encoder, text.strip(), n=min(batch_size, n - start), mean=mean,
                                 generator=gen, runtime=runtime)
        for path, pixels in zip(paths[start:], images):
            _write_png(path, pixels)
    return paths


def _generator(heads: GenerativeHeads | None, what: str) -> ImageGenerator:
    """The run's image generator; a run trained without GXN's t2i path is refused (``what`` names it)."""
    if heads is None or heads.image_generator is None:
        raise XmrError("{what} was trained without the t2i path: train it with {fix} to imagine", what=what,
                       fix=Param("generative", ("t2i",)))
    return heads.image_generator


def imagined_pixels(model: JointModel, heads: GenerativeHeads | None, text_encoder: TextEncoder, text: str, *,
                    n: int = 4, seed: int = 0, mean: bool = False, generator: torch.Generator | None = None,
                    runtime: Runtime | None = None) -> np.ndarray:
    """``n`` images (n, 64, 64, 3) uint8 that the run's generator (``heads``, beside ``model``) draws for
    ``text`` (GXN Sec. 3.4): t_l of the text, then G(z, t_c) with z and the conditioning-augmentation
    sample seeded by ``seed`` (``mean``: t_c = mu, no sample), or drawn from ``generator`` when given
    (batches of one series). ``heads`` must hold an image generator; they and the model run on ``runtime``
    (None: the CPU at fp32). All ``n`` at once: see :func:`imagine_images`."""
    generator_net = _generator(heads, "this model")
    runtime = _placed(runtime, model, heads)
    feats = np.repeat(text_encoder.encode_batch([text]), n, axis=0)  # the text encoded once
    t_l = _grounded(model, feats, "text", runtime)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)  # a CPU generator
    with torch.inference_mode(), runtime.autocast():
        return to_pixels(generator_net(t_l, sample=not mean, generator=gen)["images"])


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """``pixels`` (H, W, 3) uint8 as a PNG at ``path``, atomically."""
    atomic_save_file(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def caption_quality(run_dir: str | Path, *, split: str = "test", ranks: int = 5, beams: tuple[int, ...] = (1, 3),
                    cache_dir: str | Path | None = None, show_progress: bool | None = None) -> dict[str, object]:
    """Caption quality of a run on ``split``: GXN's Table 2 and, with a captioner, its generated captions.

    * ``retrieved``: for r = 1..``ranks``, BLEU-1..4 and CIDEr (pycocoevalcap) of the r-th caption
      each image retrieves from the split's texts (scored by the run's similarity), against that
      image's own texts (GXN Table 2: "the rank order of the retrieved caption").
    * ``generated``: for each beam width in ``beams`` (1 = greedy), the same metrics of the caption
      the decoder writes for each image (runs trained with the i2t path only).

    Returns:
        ``{"retrieved": {r: metrics}, "generated": {"beam B": metrics}, "examples": [...], "n_images"}``.
    """
    from xmr.evaluation.captions import caption_scores
    from xmr.evaluation.similarity import score_fn
    from xmr.runs.config import run_items
    from xmr.workflows.features import encode_items

    config, model = load_run(run_dir)
    fs = encode_items(run_items(config, split=split), **run_encoders(config, model.vocab), cache_dir=cache_dir,
                      show_progress=show_progress)
    img = model.embed_numpy(fs.image_feats, "image")
    txt = model.embed_numpy(fs.text_feats, "text")
    scores = score_fn(model.config.similarity)(img, txt)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :ranks]
    # images whose every text is word-less ("#", "*": emoji keycaps) have nothing to score against
    keep = [i for i in range(len(fs.items)) if any(tokenize(fs.texts[j]) for j in fs.relevance[i].indices)]
    ids = [f"{i}" for i in keep]
    refs = {str(i): [fs.texts[j] for j in fs.relevance[i].indices] for i in keep}
    top = top[keep]
    retrieved = {r + 1: caption_scores({k: fs.texts[top[i, r]] for i, k in enumerate(ids)}, refs)
                 for r in range(min(ranks, len(fs.texts)))}
    out: dict[str, object] = {"retrieved": retrieved, "n_images": len(ids), "split": split,
                              "n_images_without_words": len(fs.items) - len(keep)}
    heads = _heads(run_dir, model)
    if heads is not None and heads.captioner is not None and heads.caption_vocab is not None:
        captioner, vocab = heads.captioner, heads.caption_vocab
        v_l = _grounded(model, fs.image_feats[keep], "image")
        generated, written = {}, {}
        for beam in beams:
            with torch.inference_mode():  # beam 1 is greedy decoding: one batched pass
                rows = (captioner.sample(v_l, greedy=True)[0].tolist() if beam == 1
                        else captioner.beam_search(v_l, beam=beam))
            caps = [decode_ids(vocab, row) for row in rows]
            generated[f"beam {beam}"] = caption_scores(dict(zip(ids, caps)), refs)
            written[beam] = caps
        out["generated"] = generated
        out["examples"] = [{"image": fs.items[keep[n]].image, "references": refs[k],
                            **{f"beam {b}": written[b][n] for b in beams}} for n, k in enumerate(ids[:8])]
    return out
