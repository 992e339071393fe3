"""Every subcommand given a bad argument prints one ``xmr: error:`` line and exits 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmr.cli import main
from xmr.errors import XmrError

from hostile import TOY, TRAIN, cli_error, make_toy_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_toy_run(tmp_path_factory.mktemp("cli-errors"), index_split="test")


BAD = {
    "data fetch": (["data", "fetch", "no-such-set"], "unknown dataset"),
    "encode": (["encode", "{m}", "--image-encoder", "nope", "--text-encoder", "toy-text"], "unknown encoder"),
    "train: margin": (["train", "{m}", "--out", "{tmp}/a", *TRAIN, "--margin", "-1"], "margin"),
    "train: head": (["train", "{m}", "--out", "{tmp}/a", *TRAIN, "--head", "nope"], "unknown head"),
    "train: similarity": (["train", "{m}", "--out", "{tmp}/a", *TRAIN, "--similarity", "nope"], "nope"),
    "train: embed dim": (["train", "{m}", "--out", "{tmp}/a", *TRAIN, "--embed-dim", "0"], "--embed-dim"),
    "train: text pool": (["train", "{m}", "--out", "{tmp}/a", *TOY[:2], "--text-encoder", "textcnn",
                          "--word-vectors", "random", "--text-pool", "nope"], "nope"),
    "train: composed": (["train", "{m}", "--out", "{tmp}/a", "--task", "composed", "--compose", "nope"], "nope"),
    "index": (["index", "{run}", "--factory", "IVF99999,Flat", "--cache-dir", "{cache}"], "IVF99999"),
    "search": (["search", "{run}", "--text", "x", "--rerank", "nope"], "nope"),
    "eval": (["eval", "{run}", "--split", "nope", "--cache-dir", "{cache}"], "nope"),
    "demo": (["demo", "--out", "{tmp}/demo", "--epochs", "0", "--cache-dir", "{tmp}/nocache"], "epochs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_argument_is_one_line(case: str, run: tuple[Path, Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    manifest, cache, r = run
    args, expected = BAD[case]
    args = [a.format(m=manifest, run=r, cache=cache, tmp=tmp_path) for a in args]
    assert expected in cli_error(args, capsys)


def test_xmr_error_is_a_value_error() -> None:
    from xmr.training import TrainConfig

    with pytest.raises(XmrError):
        TrainConfig(epochs=0)
    assert issubclass(XmrError, ValueError)


def test_every_valid_loss_and_similarity_is_listed(capsys: pytest.CaptureFixture) -> None:
    from xmr.evaluation.similarity import SIMILARITIES
    from xmr.training import TrainConfig

    assert main(["list"]) == 0
    listed = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    for loss in listed["losses"].split(", "):
        TrainConfig(loss=loss, epochs=5)  # each listed loss is valid
    assert "instance" in listed["losses"]
    assert listed["similarities"].split(", ") == SIMILARITIES.names()
    assert SIMILARITIES.get("cosine").is_inner_product and not SIMILARITIES.get("order").is_inner_product
