"""xmr — cross-modal retrieval: learn a joint image-text space, index it, search it, evaluate it."""

from __future__ import annotations

__version__ = "0.1.0"

from xmr.errors import XmrError

__all__ = ["XmrError", "__version__"]
