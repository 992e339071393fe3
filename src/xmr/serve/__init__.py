"""``xmr serve``: a search service and a web page for an indexed run.

:class:`~xmr.serve.service.SearchService` answers queries (no web framework);
:func:`~xmr.serve.app.create_app` puts FastAPI around it; :func:`serve` runs it with uvicorn.
"""

from __future__ import annotations

from xmr.serve.config import ServeConfig
from xmr.serve.run import serve

__all__ = ["ServeConfig", "serve"]
