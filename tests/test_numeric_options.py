"""Issue 25, 2.8: every numeric option, environment variable and config field is finite and in range,
checked in one place (``xmr.utils.numbers``): ``inf``, ``nan`` and out-of-range values are one line."""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Iterator

import pytest

from xmr.cli import build_parser
from xmr.data.folder import parse_split_fractions
from xmr.errors import XmrError
from xmr.index.budget import parse_bytes

from hostile import cli_error

MAX_WHOLE = 2**63 - 1  # xmr.utils.numbers.MAX_WHOLE: the largest whole number an option takes


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command of the parser with its words: (), ("train",), ("data", "manifest") ..."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _required(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a command's required positionals and options, so that it parses."""
    args: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if not action.option_strings and action.nargs not in ("?", "*"):
            args.append("x")
        elif action.option_strings and action.required:
            args += [action.option_strings[0], "x"]
    return args


def _numeric_options() -> list[tuple[tuple[str, ...], argparse.Action, list[str]]]:
    out = []
    for path, parser in _commands(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions) and path:
            continue  # a command group (xmr data): its subcommands carry the options
        for action in parser._actions:
            if action.type in (int, float) or hasattr(action.type, "range"):
                out.append((path, action, _required(parser)))
    return out


NUMERIC = _numeric_options()


def _argv(path: tuple[str, ...], action: argparse.Action, required: list[str], value: str) -> list[str]:
    option = action.option_strings[0]
    return [f"{option}={value}", "list"] if not path else [*path, *required, f"{option}={value}"]


def _valid_sample(r: typing.Any) -> str:
    if r.lo is not None and r.hi is not None:
        return str((r.lo + r.hi) // 2 if r.whole else (r.lo + r.hi) / 2)
    if r.lo is not None:
        return str(int(r.lo) + 1 if r.whole else r.lo + 0.5)
    return "1"


def test_the_parser_walk_finds_the_numeric_options() -> None:
    names = {(p, a.option_strings[0]) for p, a, _ in NUMERIC}
    assert {(("train",), "--lr"), (("serve",), "--max-upload-mb"), (("search",), "-k"),
            ((), "--max-image-pixels"), (("data", "manifest"), "--seed"), (("imagine",), "--n")} <= names
    assert len(NUMERIC) >= 40


@pytest.mark.parametrize("path,action,required", NUMERIC, ids=[f"{' '.join(p) or 'xmr'} {a.option_strings[0]}"
                                                               for p, a, _ in NUMERIC])
def test_every_numeric_option_is_finite_and_in_range(path: tuple[str, ...], action: argparse.Action,
                                                     required: list[str], capsys: pytest.CaptureFixture) -> None:
    assert action.type not in (int, float), "a numeric option must use a checked type (cli._Number)"
    r = action.type.range  # type: ignore[union-attr]  # an xmr.utils.numbers.NumberRange
    option = action.option_strings[0]
    bad = ["inf", "-inf", "nan", "1e999", "abc"]
    bad += ["1.5", str(MAX_WHOLE + 1)] if r.whole else []
    bad += [str(r.lo - 1)] if r.lo is not None else []
    bad += [str(r.hi + 1)] if r.hi is not None else []
    bad += [str(r.lo)] if r.lo is not None and r.lo_open else []
    for value in bad:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(_argv(path, action, required, value))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1, (option, value, err)
        assert err[0].startswith(f"xmr: error: argument {option}") and "must be" in err[0], err
    good = _valid_sample(r)
    parsed = build_parser().parse_args(_argv(path, action, required, good))
    assert getattr(parsed, action.dest) == (int(float(good)) if r.whole else float(good))


def _float_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if isinstance(f.default, float) or (isinstance(f.default, tuple) and f.default
                                                and all(isinstance(v, float) for v in f.default))]


def _configs() -> list[tuple[type, dict[str, object]]]:
    from xmr.compose.model import ComposedModelConfig
    from xmr.encoders.augment import AugmentConfig
    from xmr.models import ModelConfig
    from xmr.models.captioner import CaptionerConfig
    from xmr.objectives import GenerativeConfig, SparseAlignmentConfig
    from xmr.serve.config import ServeConfig
    from xmr.tasks.composed.train import ComposedTrainConfig
    from xmr.text import TextEncoderConfig
    from xmr.training import TrainConfig
    from xmr.workflows.ray_encode import RayEncodeConfig

    model = {"image_encoder": "toy-image", "text_encoder": "toy-text", "image_dim": 8, "text_dim": 8}
    return [(TrainConfig, {}), (ComposedTrainConfig, {}), (ServeConfig, {}), (RayEncodeConfig, {}),
            (AugmentConfig, {}), (ModelConfig, model),
            (CaptionerConfig, {"vocab_size": 10, "in_dim": 8}), (TextEncoderConfig, {}),
            (ComposedModelConfig, {}), (SparseAlignmentConfig, {}), (GenerativeConfig, {"paths": ("i2t",)})]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_config_fields_must_be_finite(value: float) -> None:
    checked = 0
    for cls, base in _configs():
        try:
            cls(**base)
        except TypeError:  # a required field this test does not know: say so instead of skipping silently
            pytest.fail(f"{cls.__name__} needs more arguments than {sorted(base)}")
        for name in _float_fields(cls):
            default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
            bad = value if isinstance(default, float) else (value,) * len(default)  # type: ignore[arg-type]
            with pytest.raises(XmrError, match=name):
                cls(**{**base, name: bad})
            checked += 1
    assert checked >= 30


def test_split_fractions_and_sizes_must_be_finite(tmp_path, capsys: pytest.CaptureFixture) -> None:
    for bad in ("inf/0/0", "nan/1/1", "80/10/inf", "1e308/1e308/1e308", "0/0/0"):
        with pytest.raises(XmrError, match="split '"):  # the library's wording; the CLI's is asserted below
            parse_split_fractions(bad)
    (tmp_path / "pics").mkdir()
    msg = cli_error(["data", "manifest", tmp_path / "pics", "--out", tmp_path / "m.jsonl", "--split", "inf/0/0"],
                    capsys)
    assert "--split 'inf/0/0'" in msg and "finite" in msg
    with pytest.raises(XmrError, match="memory budget"):
        parse_bytes("9" * 400 + "GB")  # overflows the float: was an OverflowError traceback


def test_the_environment_goes_through_the_same_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr.encoders.image_io import ImageReadConfig

    for bad in ("inf", "nan", "0", "-3", "1e9", "abc"):
        monkeypatch.setenv("XMR_MAX_IMAGE_PIXELS", bad)
        with pytest.raises(XmrError, match=r"\$XMR_MAX_IMAGE_PIXELS: must be >= 1 \(a whole number\)"):
            ImageReadConfig.from_env()
    monkeypatch.setenv("XMR_MAX_IMAGE_PIXELS", "1_000")
    assert ImageReadConfig.from_env().max_pixels == 1000
