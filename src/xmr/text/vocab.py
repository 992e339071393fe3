"""Word tokenizer and the training vocabulary of the word-level text encoders.

Ids are fixed by convention: ``0`` is padding (:data:`PAD_ID`), ``1`` is the unknown word
(:data:`UNK_ID`), real words start at ``2``. The vocabulary is built from the *training* texts
only; a word seen fewer than ``min_count`` times there, or only at test time, maps to
``UNK_ID``. Pretrained word vectors never add words: a GloVe word absent from the training
texts gets no id (as in Zheng et al., "Dual-Path Convolutional Image-Text Embeddings",
TOMM 2020, Sec. VI "Word2vec initialization helps": the dictionary keeps only training words).

Example::

    vocab = Vocabulary.build(["a red circle", "a blue square"], VocabConfig(min_count=1))
    vocab.encode("a green circle")   # [2, 1, 3]: 'green' is unknown
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from xmr.errors import XmrError
from xmr.utils.io import load_json, save_json
from xmr.utils.tokens import tokenize

PAD_ID = 0
UNK_ID = 1
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
FORMAT = "xmr-vocabulary-v1"

@dataclass(frozen=True)
class VocabConfig:
    """How a vocabulary is built.

    Args:
        min_count: a training word needs at least this many occurrences to get an id.
        max_size: keep at most this many real words (the most frequent); ``None`` keeps all.
    """

    min_count: int = 1
    max_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise XmrError(f"vocabulary min_count must be an integer >= 1, got {self.min_count!r}")
        if self.max_size is not None and (not isinstance(self.max_size, int) or self.max_size < 1):
            raise XmrError(f"vocabulary max_size must be None or an integer >= 1, got {self.max_size!r}")


class Vocabulary:
    """Word <-> id table with ``PAD_ID = 0`` and ``UNK_ID = 1`` reserved.

    Build it with :meth:`build`; construct directly only from a saved word list.

    Args:
        words: the real words in id order (ids ``2 .. len(words) + 1``); no duplicates, no
            reserved tokens.
        config: the config the words were built with (saved alongside).
    """

    def __init__(self, words: Sequence[str], config: VocabConfig = VocabConfig()) -> None:
        self.config = config
        self._words: list[str] = [PAD_TOKEN, UNK_TOKEN, *words]
        self._ids: dict[str, int] = {}
        for i, w in enumerate(self._words):
            if not isinstance(w, str) or not w:
                raise XmrError(f"vocabulary word {i} is {w!r}, not a non-empty string")
            if w in self._ids:
                raise XmrError(f"vocabulary word {w!r} appears twice")
            self._ids[w] = i

    @classmethod
    def build(cls, texts: Iterable[str], config: VocabConfig = VocabConfig()) -> Vocabulary:
        """Count the tokens of ``texts`` and keep the frequent ones.

        Words are ordered by count (descending), ties alphabetically, so the same texts always
        give the same ids whatever their order.
        """
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text))
        for reserved in (PAD_TOKEN, UNK_TOKEN):  # cannot come out of tokenize, but be explicit
            counts.pop(reserved, None)
        kept = sorted((w for w, c in counts.items() if c >= config.min_count), key=lambda w: (-counts[w], w))
        if config.max_size is not None:
            kept = kept[: config.max_size]
        return cls(kept, config)

    def __len__(self) -> int:
        """Number of ids, including padding and unknown."""
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._ids and word not in (PAD_TOKEN, UNK_TOKEN)

    @property
    def words(self) -> list[str]:
        """All tokens in id order, ``words[0] == "<pad>"``, ``words[1] == "<unk>"``."""
        return list(self._words)

    def id(self, word: str) -> int:
        """The id of ``word``; ``UNK_ID`` if it is not in the vocabulary."""
        return self._ids.get(word, UNK_ID)

    def word(self, idx: int) -> str:
        """The token with id ``idx``."""
        if not 0 <= idx < len(self._words):
            raise XmrError(f"word id {idx} is outside the vocabulary of {len(self._words)} ids")
        return self._words[idx]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no padding, no truncation); unknown words give ``UNK_ID``."""
        return [self._ids.get(t, UNK_ID) for t in tokenize(text)]

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically)."""
        save_json(path, {"format": FORMAT, "config": asdict(self.config), "words": self._words[2:]})

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        data = load_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise XmrError(f"{path} is not an xmr vocabulary (expected format {FORMAT!r})")
        return cls(data["words"], VocabConfig(**data["config"]))

    def digest(self) -> str:
        """A short content hash of the words and config (names caches of id features)."""
        blob = json.dumps({"config": asdict(self.config), "words": self._words}, ensure_ascii=False)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:12]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._words == other._words and self.config == other.config

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} ids, {self.config})"
