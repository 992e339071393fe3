"""The run folder: one config type (:class:`BaseRunConfig`, one subclass per task), one loader.

``load_run_config(run)`` reads any run folder's ``run.json`` as its task's config;
``load_run_config(run, RunConfig)`` also refuses a run of another task. Below :mod:`xmr.search`
and :mod:`xmr.workflows`: a searcher loads a run without importing the jobs that make one.
"""

from __future__ import annotations

from xmr.runs.base import (
    RUN_CONFIGS,
    RUN_FILE,
    BaseRunConfig,
    load_run_config,
    read_task_name,
    register_run_config,
    save_run_config,
    saved_run_matches,
)
from xmr.runs.composed import ComposedRunConfig
from xmr.runs.config import RunConfig, load_run, run_encoders, run_items

__all__ = ["RUN_CONFIGS", "RUN_FILE", "BaseRunConfig", "ComposedRunConfig", "RunConfig", "load_run", "load_run_config",
           "read_task_name", "register_run_config", "run_encoders", "run_items", "save_run_config",
           "saved_run_matches"]
