"""xmr's one word tokenizer (shared by the word-level text models and the caption metrics)."""

from __future__ import annotations

import re

# A token is a maximal run of Unicode letters or digits ("[^\W_]" = \w without the underscore).
_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it on every non-alphanumeric character.

    Punctuation, underscores and whitespace separate tokens and are dropped, so
    ``"Don't-stop, 2 cats!"`` gives ``["don", "t", "stop", "2", "cats"]``. Lower-casing matches
    GloVe 6B, whose vocabulary is lower-case.
    """
    return _TOKEN.findall(text.lower())
