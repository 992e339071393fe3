"""What the built-in tasks' options share: the encoder options, and option defaults read from the
config dataclasses (each option's ``--help`` default is its field's, the one source).

No torch or FAISS at import: the CLI builds its parser from every task's options.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from xmr.modality import DEFAULT_K, Target
from xmr.tasks.base import OptionParser
from xmr.utils.argtypes import count, positive, positive_int, seed

#: ``{config dataclass: {option dest: field}}``: which option fills which field
FieldMap = Mapping[type, Mapping[str, str]]


@dataclass(frozen=True)
class SearchOptions:
    """What ``xmr search`` shows unless told: the ``k`` best ``target`` (the one source of those defaults)."""

    k: int = DEFAULT_K
    target: Target = "images"


def field_defaults(fields: FieldMap) -> dict[str, Any]:
    """``{option dest: its field's default}`` for every field that has a plain default."""
    out: dict[str, Any] = {}
    for cls, by_dest in fields.items():
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for dest, name in by_dest.items():
            if defaults.get(name, dataclasses.MISSING) is not dataclasses.MISSING:
                out.setdefault(dest, defaults[name])
    return out


def with_defaults(parser: OptionParser, fields: Callable[[], FieldMap], dests: Collection[str]) -> Callable[..., Any]:
    """``parser.add_argument`` that gives each option whose dest is in ``dests`` (the maps of
    ``fields``) its config field's default, read only when ``--help`` shows it: ``fields`` imports
    the configs, which may load torch."""
    defaults = functools.cache(lambda: field_defaults(fields()))

    def add(*flags: str, **kwargs: Any) -> Any:
        dest = option_dest(flags, kwargs)
        if "default" not in kwargs and dest in dests:
            kwargs["default"] = functools.partial(_default_of, defaults, dest)
        return parser.add_argument(*flags, **kwargs)

    return add


def param_default(module: str, function: str, name: str) -> Any:
    """The default of parameter ``name`` of ``module.function``, imported when asked (for ``--help``)."""
    import importlib
    import inspect

    return inspect.signature(getattr(importlib.import_module(module), function)).parameters[name].default


def option_dest(flags: tuple[str, ...], kwargs: Mapping[str, Any]) -> str:
    """The dest argparse gives an option: ``dest=``, else its first long flag (or its only name) with
    underscores for dashes."""
    if "dest" in kwargs:
        return str(kwargs["dest"])
    return next((f for f in flags if f.startswith("--")), flags[0]).lstrip("-").replace("-", "_")


def _default_of(defaults: Callable[[], Mapping[str, Any]], dest: str) -> Any:
    return defaults().get(dest)


def encoder_name(text: str) -> str:
    """argparse type of the encoder options: ``hf-clip:ckpt`` is stored as ``hf-clip:/abs/ckpt`` (the run
    works from any folder later), a model id pinned to its commit (``hf-clip:org/name@<commit>``); any other
    name is kept as typed and checked by the config."""
    from xmr.encoders import canonical_encoder_name

    return canonical_encoder_name(text)


def add_encoders(add: Callable[..., Any]) -> None:
    """``--image-encoder`` and ``--text-encoder`` (the training options of every built-in task)."""
    add("--image-encoder", type=encoder_name,
        help="registered image encoder (xmr list), or hf-clip:PATH (a local "
             "transformers CLIP/SigLIP checkpoint folder, or a model id in the Hugging Face cache), or "
             "open-clip:SPEC (an open_clip model folder, model id or ARCH:FILE); give it to both options")
    add("--text-encoder", type=encoder_name,
        help="registered text encoder (xmr list), or hf-clip:PATH, or open-clip:SPEC; for training "
             "also textcnn | bigru (trained end to end); composed training: lstm (the default there) or a "
             "frozen encoder")


def add_optimisation(add: Callable[..., Any], *, unit: str) -> None:
    """What every built-in task's training takes: ``--embed-dim``, ``--epochs``, ``--batch-size``,
    ``--lr``, ``--patience``, ``--seed`` (``unit``: what a training example is, ``pair`` or ``triplet``)."""
    add("--epochs", type=positive_int, help=f"most passes over the training {unit}s (with early stopping)")
    add("--batch-size", type=positive_int, help=f"{unit}s per step; the in-batch negatives")
    add("--lr", type=positive, help="learning rate of the heads (AdamW)")
    add("--patience", type=count, help="early stopping patience in epochs (0 = off)")
    add("--seed", type=seed, help="seeds initialisation, batches, sparse draws")
    add("--embed-dim", type=positive_int, help="size of the joint space")


def add_skip_bad(add: Callable[..., Any]) -> None:
    """``--skip-bad``: go around unreadable images and bad manifest rows instead of refusing them."""
    add("--skip-bad", action="store_true",
        help="leave out unreadable images and bad manifest rows (warn with a count; the items "
             "left out are listed in skipped.jsonl beside the output) instead of refusing them")


def add_rerank(add: Callable[..., Any], *, many: bool) -> None:
    """``--rerank`` and ``--rerank-param`` (a retrieval run's evaluation and search)."""
    names = "diffusion | bidirectional | geodesic" + (" (comma-separated for several)" if many else "")
    add("--rerank", metavar="NAME", help=f"re-rank on the data manifold: {names}")
    add("--rerank-param", action="append", metavar="KEY=VALUE",
        help="re-ranking parameter, repeatable (e.g. k=20, alpha=0.8, diffusion.n_trunc=1000)")
