"""The one rule of a run folder: it holds the run of one config; another is refused unless started over."""

from __future__ import annotations

from pathlib import Path

from xmr.errors import Param, XmrError


def refuse_other_config(out: str | Path, same: bool, what: str = "a run") -> None:
    """Refuse ``out`` unless ``same``: the run it holds (``run.json``, ``train.json``) has the config asked for.

    Every trainer and task asks this (with the match it reads), so the rule and its advice have one
    wording: start again with ``overwrite`` or pick a new folder.
    """
    if not same:
        raise XmrError("{out} holds {what} with another config; pick a new folder or pass {fix} to start again",
                       out=str(out), what=what, fix=Param("overwrite", True))
