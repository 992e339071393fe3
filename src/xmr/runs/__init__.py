"""The run folder: its config (``run.json``), its loader, and the data and encoders it names.

Below :mod:`xmr.search` and :mod:`xmr.workflows`: a searcher loads a run without importing the
jobs that make one.
"""

from __future__ import annotations

from xmr.runs.config import RUN_FILE, RunConfig, load_run, load_run_config, run_encoders, run_items

__all__ = ["RUN_FILE", "RunConfig", "load_run", "load_run_config", "run_encoders", "run_items"]
