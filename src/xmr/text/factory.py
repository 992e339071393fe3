"""Config and factory of the trainable word-level text encoders.

Example (offline, random word vectors)::

    from xmr.text import TextEncoderConfig, Vocabulary, create_text_model, encode_ids

    vocab = Vocabulary.build(train_texts)
    cfg = TextEncoderConfig(kind="textcnn", init="random", out_dim=128)
    model = create_text_model(cfg, vocab)
    ids = encode_ids(batch_texts, vocab, cfg.length, cfg.shift_for_training, rng)
    emb = model(torch.from_numpy(ids))          # (B, 128), L2-normalised
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from torch import nn

from xmr.errors import XmrError
from xmr.text import bigru, lstm, text_cnn  # noqa: F401  (register the built-ins)
from xmr.text.registry import TEXT_MODELS
from xmr.text.vocab import Vocabulary
from xmr.text.word_vectors import embedding_matrix, load_glove
from xmr.utils.numbers import check_finite_fields


def _pools(kind: str) -> tuple[str, ...]:
    """The poolings the registered text model ``kind`` offers (its ``POOLS``; the first is its default)."""
    return tuple(TEXT_MODELS.get(kind).POOLS)  # type: ignore[attr-defined]  # every TEXT_MODELS entry has POOLS


@dataclass(frozen=True)
class TextEncoderConfig:
    """A word-level text encoder, fully described (saved as JSON beside its checkpoint).

    Args:
        kind: the registered model, ``"textcnn"`` (Zheng et al. 2020), ``"bigru"`` or ``"lstm"``
            (TIRG's query encoder, hidden 512).
        length: the fixed id-row length (the paper's 32).
        word_dim: the word-vector size (50 for the packaged GloVe).
        hidden: TextCNN block width / GRU state size per direction.
        out_dim: the output embedding size.
        init: word table from ``"glove"`` vectors or ``"random"`` N(0, 0.1^2).
        position_shift: pad at random before/after during training (TextCNN only; the bi-GRU
            compacts its tokens, so a shift cannot change its output).
        blocks: TextCNN residual blocks (ignored by ``bigru``).
        pool: ``"max"``/``"avg"`` (textcnn) or ``"mean"``/``"last"``/``"attention"`` (bigru,
            the last is A3VSE's K-head token attention); ``None`` takes
            the first of these.
        dropout: dropout before the final fc.
        normalize: L2-normalise the output.
        seed: seeds the random rows of the word table.
    """

    kind: Literal["textcnn", "bigru", "lstm"] = "textcnn"
    length: int = 32
    word_dim: int = 50
    hidden: int = 256
    out_dim: int = 256
    init: Literal["glove", "random"] = "glove"
    position_shift: bool = True
    blocks: int = 2
    pool: str | None = None
    dropout: float = 0.0
    normalize: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if self.kind not in TEXT_MODELS:
            raise XmrError(f"unknown text model kind {self.kind!r}; known: {', '.join(TEXT_MODELS.names())}")
        if self.init not in ("glove", "random"):
            raise XmrError(f"text encoder init must be 'glove' or 'random', got {self.init!r}")
        for name in ("length", "word_dim", "hidden", "out_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise XmrError(f"text encoder {name} must be a positive integer, got {value!r}")
        if not isinstance(self.blocks, int) or self.blocks < 0:
            raise XmrError(f"text encoder blocks must be an integer >= 0, got {self.blocks!r}")
        if self.kind == "textcnn" and self.hidden < 4:
            raise XmrError(f"textcnn hidden must be >= 4 (bottleneck = hidden / 4), got {self.hidden}")
        if self.pool is not None and self.pool not in _pools(self.kind):
            raise XmrError(f"{self.kind} pool must be one of {', '.join(_pools(self.kind))}, got {self.pool!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise XmrError(f"text encoder dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def pooling(self) -> str:
        """The pooling in effect (``pool`` or the kind's default)."""
        return self.pool or _pools(self.kind)[0]

    @property
    def shift_for_training(self) -> bool:
        """Whether training batches should be encoded with position shift."""
        return self.position_shift and self.kind == "textcnn"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TextEncoderConfig:
        """The config saved by :meth:`to_dict`; unknown keys are refused, naming them."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise XmrError(f"unknown text encoder config keys: {', '.join(unknown)}")
        return cls(**data)  # type: ignore[arg-type]  # JSON values; __post_init__ validates each


def create_text_model(
    config: TextEncoderConfig,
    vocab: Vocabulary,
    vectors: tuple[Sequence[str], np.ndarray] | None = None,
) -> nn.Module:
    """Build the encoder ``config.kind`` with its word table initialised for ``vocab``.

    Args:
        config: the encoder.
        vocab: the training vocabulary (rows of the word table).
        vectors: ``(words, vectors)`` pretrained vectors for ``init="glove"``; ``None`` loads
            the packaged GloVe (needs the ``glove`` extra). Ignored for ``init="random"``.

    Returns:
        The model; ``model(ids)`` maps (B, L) int64 ids to (B, out_dim).
    """
    if config.init == "glove":
        words, vecs = vectors if vectors is not None else load_glove(config.word_dim)
        if vecs.shape[1] != config.word_dim:
            raise XmrError(f"word vectors are {vecs.shape[1]}-d but the config says word_dim={config.word_dim}")
        table = embedding_matrix(vocab, words, vecs, seed=config.seed)
    else:
        table = embedding_matrix(vocab, [], np.zeros((0, config.word_dim), np.float32), seed=config.seed, std=0.1)
    kwargs: dict[str, object] = {"hidden": config.hidden, "out_dim": config.out_dim, "pool": config.pooling,
                                 "dropout": config.dropout, "normalize": config.normalize}
    if config.kind == "textcnn":
        kwargs["blocks"] = config.blocks
    return TEXT_MODELS.get(config.kind)(table, **kwargs)
