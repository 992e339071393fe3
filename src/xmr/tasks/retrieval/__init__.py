"""The ``retrieval`` task: a joint image-text space (:mod:`xmr.workflows.train`), indexed
(:mod:`xmr.workflows.index`), searched by text or image (:class:`xmr.search.Searcher`), served
(:class:`xmr.serve.service.SearchService`), and, for a run with GXN's generative paths, captions and
imagined images (:mod:`xmr.workflows.imagine`).

Its modules: :mod:`.options` (the options of ``xmr train`` / ``eval`` / ``search`` and the config
built from them), :mod:`.report` (``xmr eval``'s report), :mod:`.search` (``xmr search``'s lines).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from xmr.tasks.base import DEFAULT_TASK, TASKS, EvalOutcome, OptionParser, Options, Task, TrainOutcome, pick
from xmr.tasks.options import FieldMap
from xmr.tasks.retrieval import options

if TYPE_CHECKING:
    from xmr.runs import RunConfig
    from xmr.runtime.device import Runtime
    from xmr.serve.config import ServeConfig
    from xmr.serve.service import SearchService
    from xmr.workflows.index_job import IndexJob


class RetrievalTask(Task["RunConfig"]):
    """Learn a joint space; index it; search by text or image; R@K / medr / rsum (+ mAP, CMC)."""

    name = DEFAULT_TASK
    about = "a joint image-text space"
    capabilities = frozenset({"index", "serve", "captions", "imagines"})

    @property
    def config_class(self) -> type[RunConfig]:
        from xmr.runs import RunConfig

        return RunConfig

    @property
    def train_fields(self) -> FieldMap:
        """``{config dataclass: {xmr train option dest: field}}``: the fields the options fill."""
        return options.train_fields()

    def add_arguments(self, command: str, parser: OptionParser) -> None:
        adders = {"train": options.add_train_options, "eval": options.add_eval_options,
                  "search": options.add_search_options}
        if command in adders:
            adders[command](parser)

    def config_from_options(self, manifest: str, given: Options) -> RunConfig:
        return options.config_from_options(manifest, given)

    def train(self, config: RunConfig, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, given: Options | None = None, runtime: Runtime | None = None) -> TrainOutcome:
        from xmr.tasks.retrieval.options import execution_from_options
        from xmr.workflows.train import train_run

        r = train_run(config, out_dir, cache_dir=cache_dir, overwrite=overwrite,
                      skip_bad=bool((given or {}).get("skip_bad")), runtime=runtime,
                      execution=execution_from_options(given or {}))
        return TrainOutcome(r.status, r.best_epoch, r.best_metrics, r.best_dir,
                            f"val rsum {r.best_metrics.get('rsum', float('nan')):.1f}")

    def evaluate(self, run_dir: str | Path, given: Options, *, split: str, cache_dir: str | Path | None = None,
                 command: str | None = None, runtime: Runtime | None = None) -> EvalOutcome:
        from xmr.tasks.retrieval.report import evaluate_report

        return evaluate_report(run_dir, given, split=split, cache_dir=cache_dir, command=command, runtime=runtime)

    def search(self, run_dir: str | Path, given: Options, *, runtime: Runtime | None = None) -> Iterator[str]:
        from xmr.tasks.retrieval.search import search_lines

        return search_lines(run_dir, given, runtime)

    def index(self, run_dir: str | Path, job: IndexJob, *, runtime: Runtime | None = None) -> Path:
        from xmr.workflows.index import index_run

        return index_run(run_dir, job, runtime=runtime)

    def service(self, run_dir: str | Path, index_dir: str | Path | None = None,
                config: ServeConfig | None = None) -> SearchService:
        from xmr.serve.service import SearchService

        return SearchService.serving(run_dir, index_dir, config)

    def caption(self, run_dir: str | Path, image: str | Path, *, beam: int | None = None,
                runtime: Runtime | None = None) -> str:
        from xmr.workflows.imagine import caption_image

        return caption_image(run_dir, image, runtime=runtime, **pick({"beam": beam}, {"beam": "beam"}))

    def imagine(self, run_dir: str | Path, text: str, out: str | Path, *, n: int | None = None,
                seed: int | None = None, mean: bool = False, runtime: Runtime | None = None) -> list[Path]:
        from xmr.workflows.imagine import imagine_images

        return imagine_images(run_dir, text, out, mean=mean, runtime=runtime,
                              **pick({"n": n, "seed": seed}, {"n": "n", "seed": "seed"}))


TASKS.add(RetrievalTask.name, RetrievalTask())
