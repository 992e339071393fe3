"""``xmr pretrained --out RUN``: a run made from a pretrained image-text pair with no training
(:func:`xmr.workflows.pretrained.pretrained_run`); the defaults are that function's (shown in ``--help``)."""

from __future__ import annotations

import argparse
import shlex

from xmr.cli.options import defaults_from, given_values

#: options -> the keyword of :func:`~xmr.workflows.pretrained.pretrained_run` each fills (one not given is left
#: to its default)
_FIELDS = {"image_encoder": "image_encoder", "text_encoder": "text_encoder", "manifest": "manifest"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from xmr.tasks.options import encoder_name

    p = sub.add_parser("pretrained", help="make a run from a pretrained image-text pair, with no training")
    p.add_argument("--out", required=True, help="run folder (created; the same run made again is rewritten as it was)")
    p.add_argument("--image-encoder", type=encoder_name, default=None,
                   help="the image side: a registered image encoder (xmr list) or hf-clip:PATH; its features must "
                        "live in the text encoder's space")
    p.add_argument("--text-encoder", type=encoder_name, default=None,
                   help="the text side: a registered text encoder, or the same hf-clip:PATH")
    p.add_argument("--manifest", default=None,
                   help="a dataset recorded as the run's own: xmr eval RUN scores its test split, xmr index RUN "
                        "indexes it (default: none; xmr eval RUN --manifest M then names one)")
    p.add_argument("--overwrite", action="store_true", help="replace a run of another config in --out")
    p.defaults_fn = defaults_from("xmr.workflows.pretrained:pretrained_run",  # type: ignore[attr-defined]  # read by _Parser.format_help
                                  {"image_encoder": "image_encoder", "text_encoder": "text_encoder"})
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from xmr.workflows.pretrained import pretrained_run

    cfg = pretrained_run(a.out, **given_values(a, _FIELDS), overwrite=a.overwrite)
    run_dir = shlex.quote(str(a.out))
    print(f"run: {a.out} ({cfg.image_encoder} + {cfg.text_encoder}, in their shared space {cfg.pretrained_space}; "
          "no training)")
    print(f"next: xmr index {run_dir} --images FOLDER, then xmr search {run_dir} --text '...' or --image FILE")
