"""The run folder: one config type (:class:`BaseRunConfig`, one subclass per task), one loader.

The retrieval task's :class:`RunConfig` is here (:mod:`xmr.search` and :mod:`xmr.workflows` load it);
another task's config lives in its own package (``xmr.tasks.composed.config.ComposedRunConfig``).

``load_run_config(run, RunConfig)`` reads a run folder's ``run.json`` as the config class the caller
expects, refusing a run of another task; a run of any task is :func:`xmr.tasks.load_run_config`
(the task registry knows each task's config class). Below :mod:`xmr.search` and
:mod:`xmr.workflows`: a searcher loads a run without importing the jobs that make one.
"""

from __future__ import annotations

from xmr.runs.base import (
    RUN_FILE,
    BaseRunConfig,
    load_run_config,
    read_task_name,
    save_run_config,
    saved_run_matches,
)
from xmr.runs.config import RunConfig, load_run, run_encoders, run_items
from xmr.runs.paper_features import FinetuneConfig, SparseDataConfig

__all__ = ["RUN_FILE", "BaseRunConfig", "FinetuneConfig", "RunConfig", "SparseDataConfig", "load_run",
           "load_run_config", "read_task_name", "run_encoders", "run_items", "save_run_config", "saved_run_matches"]
