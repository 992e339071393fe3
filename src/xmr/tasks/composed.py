"""The ``composed`` task: an image plus a modification text finds the edited image (:mod:`xmr.workflows.composed`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xmr.errors import XmrError
from xmr.tasks.base import TASKS, EvalOutcome, Options, Task, TrainOutcome

#: option dest -> field of ComposedRunConfig / ComposedTrainConfig
COMPOSED_RUN_FIELDS = {"compose": "composer", "in_joint": "in_joint", "image_encoder": "image_encoder",
                       "text_encoder": "text_encoder", "embed_dim": "embed_dim", "compose_loss": "loss"}
COMPOSED_TRAIN_FIELDS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "patience": "patience",
                         "seed": "seed"}


def _pick(given: Options, fields: Mapping[str, str]) -> dict[str, Any]:
    return {f: given[d] for d, f in fields.items() if given.get(d) is not None}


class ComposedTask(Task):
    """TIRG-style composed queries: train a composer, R@1/10/50 on held-out triplets, search by image + text."""

    name = "composed"
    train_options = frozenset({"triplets"})
    eval_options = frozenset({"split", "cache_dir"})
    search_options = frozenset({"text", "image", "k"})

    @property
    def train_fields(self) -> Mapping[type, Mapping[str, str]]:
        from xmr.runs.composed import ComposedRunConfig
        from xmr.training.composed import ComposedTrainConfig

        return {ComposedRunConfig: COMPOSED_RUN_FIELDS, ComposedTrainConfig: COMPOSED_TRAIN_FIELDS}

    def config_from_options(self, manifest: str, given: Options) -> object:
        from xmr.data.composed_sets import triplets_beside
        from xmr.runs.composed import ComposedRunConfig
        from xmr.training.composed import ComposedTrainConfig

        triplets = given.get("triplets") or triplets_beside(manifest)
        return ComposedRunConfig(manifest=os.path.abspath(manifest), triplets=os.path.abspath(str(triplets)),
                                 **_pick(given, COMPOSED_RUN_FIELDS),
                                 train=ComposedTrainConfig(**_pick(given, COMPOSED_TRAIN_FIELDS)))

    def train(self, config: object, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, skip_bad: bool = False) -> TrainOutcome:
        from xmr.runs.composed import ComposedRunConfig
        from xmr.workflows.composed import train_composed_run

        assert isinstance(config, ComposedRunConfig)
        r = train_composed_run(config, out_dir, cache_dir=cache_dir, overwrite=overwrite)
        m = r.best_metrics
        return TrainOutcome(r.status, r.best_epoch, m, r.best_dir,
                            f"val R@1 {m.get('r1', float('nan')):.1f} R@10 {m.get('r10', float('nan')):.1f} "
                            f"R@50 {m.get('r50', float('nan')):.1f}")

    def evaluate(self, run_dir: str | Path, given: Options, *, command: str | None = None
                 ) -> EvalOutcome:
        from xmr.workflows.composed import evaluate_composed_run

        split = str(given["split"])
        cm = evaluate_composed_run(run_dir, split=split, cache_dir=given.get("cache_dir"),
                                   command=command)
        report = (f"{os.path.basename(os.path.normpath(run_dir))}, composed, split {split} "
                  f"({int(cm['n_queries'])} queries): R@1 {cm['r1']:.1f}  R@10 {cm['r10']:.1f}  R@50 {cm['r50']:.1f}  "
                  f"medr {cm['medr']:.0f}\n"
                  f"chance (a random ranking, exact): R@1 {cm['chance/r1']:.1f}  R@10 {cm['chance/r10']:.1f}  "
                  f"R@50 {cm['chance/r50']:.1f}")
        return EvalOutcome(cm, report, Path(run_dir) / f"eval-composed-{split}.json")

    def search(self, run_dir: str | Path, given: Options) -> list[str]:
        from xmr.search.composed import ComposedSearcher

        text, image = given.get("text"), given.get("image")
        if text is None or image is None:
            raise XmrError("a composed run searches with both --image (the source) and --text (the modification)")
        hits = ComposedSearcher.from_run(run_dir).search_composed(str(image), str(text), int(given.get("k") or 10))
        return [f"{h.rank:>3}  {h.score:.3f}  {h.id}  {h.image}" for h in hits]


TASKS.add(ComposedTask.name, ComposedTask())
