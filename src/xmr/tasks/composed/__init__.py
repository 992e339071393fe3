"""The ``composed`` task: an image plus a modification text finds the edited image.

The whole task is this package: its run config (:class:`.config.ComposedRunConfig`), its trainer
(:func:`.train.train_composed`: TIRG and the other composers of :mod:`xmr.compose` on cached
features), its jobs (:func:`.jobs.train_composed_run`, :func:`.jobs.evaluate_composed_run`:
R@1/10/50 on held-out triplets), its searcher (:class:`.searcher.ComposedSearcher`, over the
gallery built at training time) and its service (:class:`.service.ComposedService`). It has no
joint-space index, captions or images. The modules load lazily: registering the task imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from xmr.errors import Param, XmrError
from xmr.tasks.base import TASKS, EvalOutcome, OptionParser, Options, Task, TrainOutcome, pick, refuse_accelerated
from xmr.tasks.options import FieldMap, SearchOptions, add_encoders, add_optimisation, with_defaults
from xmr.utils.argtypes import positive_int

if TYPE_CHECKING:
    from xmr.runtime.device import Runtime
    from xmr.serve.config import ServeConfig
    from xmr.tasks.composed.config import ComposedRunConfig
    from xmr.tasks.composed.service import ComposedService

#: option dest -> field of ComposedRunConfig / ComposedTrainConfig
COMPOSED_RUN_FIELDS = {"compose": "composer", "in_joint": "in_joint", "image_encoder": "image_encoder",
                       "text_encoder": "text_encoder", "embed_dim": "embed_dim", "compose_loss": "loss"}
COMPOSED_TRAIN_FIELDS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "patience": "patience",
                         "seed": "seed"}


class ComposedTask(Task["ComposedRunConfig"]):
    """TIRG-style composed queries: train a composer, R@1/10/50 on held-out triplets, search by image + text."""

    name = "composed"
    about = "image + modification text -> image"
    capabilities = frozenset({"serve"})

    @property
    def config_class(self) -> type[ComposedRunConfig]:
        from xmr.tasks.composed.config import ComposedRunConfig

        return ComposedRunConfig

    @property
    def train_fields(self) -> FieldMap:
        """``{config dataclass: {xmr train option dest: field}}``: the fields the options fill."""
        return _train_fields()

    def add_arguments(self, command: str, parser: OptionParser) -> None:
        if command == "train":
            _add_train_options(parser)
        elif command == "search":
            parser.add_argument("--text", help="the modification text (with --image, the source)")
            parser.add_argument("--image", help="the source image (a file)")
            parser.add_argument("-k", type=positive_int, default=SearchOptions.k, help="results to show")

    def config_from_options(self, manifest: str, given: Options) -> ComposedRunConfig:
        from xmr.data.composed_sets import triplets_beside
        from xmr.tasks.composed.config import ComposedRunConfig
        from xmr.tasks.composed.train import ComposedTrainConfig

        triplets = given.get("triplets") or triplets_beside(manifest)
        return ComposedRunConfig(manifest=os.path.abspath(manifest), triplets=os.path.abspath(str(triplets)),
                                 **pick(given, COMPOSED_RUN_FIELDS),
                                 train=ComposedTrainConfig(**pick(given, COMPOSED_TRAIN_FIELDS)))

    def train(self, config: ComposedRunConfig, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, given: Options | None = None, runtime: Runtime | None = None) -> TrainOutcome:
        from xmr.tasks.composed.jobs import train_composed_run

        refuse_accelerated(self.name, runtime)

        r = train_composed_run(config, out_dir, cache_dir=cache_dir, overwrite=overwrite)
        m = r.best_metrics
        return TrainOutcome(r.status, r.best_epoch, m, r.best_dir,
                            f"val R@1 {m.get('r1', float('nan')):.1f} R@10 {m.get('r10', float('nan')):.1f} "
                            f"R@50 {m.get('r50', float('nan')):.1f}")

    def evaluate(self, run_dir: str | Path, given: Options, *, split: str, cache_dir: str | Path | None = None,
                 command: str | None = None, runtime: Runtime | None = None) -> EvalOutcome:
        from xmr.tasks.composed.jobs import evaluate_composed_run

        refuse_accelerated(self.name, runtime)
        cm = evaluate_composed_run(run_dir, split=split, cache_dir=cache_dir, command=command)
        report = (f"{os.path.basename(os.path.normpath(run_dir))}, composed, split {split} "
                  f"({int(cm['n_queries'])} queries): R@1 {cm['r1']:.1f}  R@10 {cm['r10']:.1f}  R@50 {cm['r50']:.1f}  "
                  f"medr {cm['medr']:.0f}\n"
                  f"chance (a random ranking, exact): R@1 {cm['chance/r1']:.1f}  R@10 {cm['chance/r10']:.1f}  "
                  f"R@50 {cm['chance/r50']:.1f}")
        return EvalOutcome(cm, report, Path(run_dir) / f"eval-composed-{split}.json")

    def search(self, run_dir: str | Path, given: Options, *, runtime: Runtime | None = None) -> list[str]:
        from xmr.tasks.composed.searcher import ComposedSearcher
        from xmr.utils.terminal import terminal_safe

        refuse_accelerated(self.name, runtime)
        text, image = given.get("text"), given.get("image")
        if text is None or image is None:
            raise XmrError("a composed run searches with both {image} (the source) and {text} (the modification)",
                           image=Param("image"), text=Param("text"))
        hits = ComposedSearcher.from_run(run_dir).search_composed(str(image), str(text),
                                                                   int(given.get("k") or SearchOptions.k))
        return [terminal_safe(f"{h.rank:>3}  {h.score:.3f}  {h.id}  {h.image}") for h in hits]

    def service(self, run_dir: str | Path, index_dir: str | Path | None = None,
                config: ServeConfig | None = None) -> ComposedService:
        from xmr.runtime.device import resolve
        from xmr.serve.config import ServeConfig
        from xmr.tasks.composed.service import ComposedService

        if index_dir is not None:
            raise XmrError("a composed run searches its own gallery (gallery.npz); {index} does not apply",
                           index=Param("index_dir"))
        c = config or ServeConfig()
        refuse_accelerated(self.name, resolve(c.runtime))
        return ComposedService.load(run_dir, max_upload_bytes=c.max_upload_bytes, max_decodes=c.max_decodes)


def _train_fields() -> FieldMap:
    from xmr.tasks.composed.config import ComposedRunConfig
    from xmr.tasks.composed.train import ComposedTrainConfig

    return {ComposedRunConfig: COMPOSED_RUN_FIELDS, ComposedTrainConfig: COMPOSED_TRAIN_FIELDS}


def _add_train_options(parser: OptionParser) -> None:
    """``xmr train``'s options of a composed run (each default from its config field)."""
    add = with_defaults(parser, _train_fields, {*COMPOSED_RUN_FIELDS, *COMPOSED_TRAIN_FIELDS})
    add("--triplets", help="composed: the triplet JSONL (default: triplets.jsonl beside the manifest)")
    add("--compose", help="composed: tirg | relation | concat | add")
    add("--in-joint", action="store_true",
        help="composed: compose in a learned joint space (the joint-manifold paper's Eq. 2)")
    add("--compose-loss", help="composed: batch_classification | soft_triplet (TIRG) | infonce")
    add_encoders(add)
    add_optimisation(add, unit="triplet")


TASKS.add(ComposedTask.name, ComposedTask())
