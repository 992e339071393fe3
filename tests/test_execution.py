"""How the steps run (xmr.training.execution): exact gradient accumulation in micro-batches (GradCache)
against the whole batch, streamed batch rows against the epoch's rows on the device, fp16's loss scale
in ``last.pt``.

Tolerances: micro-batches sum the same gradient in another order (float rounding only): the loss within
1e-6 absolute, each parameter's gradient within 1e-6 of its largest entry (at least 1e-6 absolute: the
toy gradients reach 12, and the observed differences are <= 2e-6 there, 1.5e-7 relative), fp32, batch of
8; a short run's per-epoch losses within 1e-5. Streamed rows are the same rows: the history is equal to the last bit.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.test_training import _mc, _toy_problem

from xmr.errors import XmrError
from xmr.objectives import Batch, EpochData, Step
from xmr.training import TrainConfig, train_joint_model
from xmr.training.checkpoint import restore_resume_state, save_resume_state
from xmr.training.execution import ExecutionConfig, check_execution
from xmr.training.result import TrainState
from xmr.training.trainer import TrainingRun, _rank_update, start_run


def _run(tmp_path: Path, loss: str, micro: int | None, dropout: float = 0.0) -> TrainingRun:
    pairs, val = _toy_problem()
    mc = dataclasses.replace(_mc(), dropout=dropout, n_instances=36 if loss == "instance" else 0)
    run = start_run(pairs, val, mc,
                    TrainConfig.from_flat(loss=loss, batch_size=8, epochs=2, vse0_warmup_epochs=0), out_dir=tmp_path,
                    execution=ExecutionConfig(micro_batch=micro))
    img, txt = torch.from_numpy(pairs.image_feats), torch.from_numpy(pairs.text_feats)
    for c in run.components:
        c.begin_epoch(EpochData(0, 4, img, txt, torch.from_numpy(pairs.image_groups)))
    run.trained.train()
    return run


def _batch(run: TrainingRun) -> Batch:
    idx = torch.from_numpy(run.train.pairs[[3, 17, 5, 30, 11, 0, 24, 8]])
    images, texts = idx[:, 0], idx[:, 1]
    img, txt = torch.from_numpy(run.train.image_feats), torch.from_numpy(run.train.text_feats)
    return Batch(0, images, texts, torch.from_numpy(run.train.image_groups)[images], img[images], txt[texts])


def _assert_close(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    tol = 1e-6 * max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= tol, name


def _grads(run: TrainingRun) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in run.trained.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss", ["infonce", "vse++", "instance"])
@pytest.mark.parametrize("micro", [2, 3, 4])
def test_micro_batches_give_the_whole_batch_gradient(tmp_path: Path, loss: str, micro: int) -> None:
    whole, parts = _run(tmp_path / "a", loss, None), _run(tmp_path / "b", loss, micro)
    torch.manual_seed(1)
    out_whole = _rank_update(whole, _batch(whole))
    torch.manual_seed(1)
    out_parts = _rank_update(parts, _batch(parts))
    assert float(out_parts["loss"].detach()) == pytest.approx(float(out_whole["loss"].detach()), abs=1e-6)
    g_whole, g_parts = _grads(whole), _grads(parts)
    assert g_whole.keys() == g_parts.keys() and len(g_whole) >= 4
    for name in g_whole:
        _assert_close(g_parts[name], g_whole[name], name)


@pytest.mark.parametrize("micro", [2, 4])
def test_with_dropout_each_micro_batch_replays_its_first_pass_masks(tmp_path: Path, micro: int) -> None:
    """The reference: each micro-batch embedded once, with its graph, from the same RNG state (the masks
    GradCache's first pass draws), the terms on the whole batch, one backward."""
    parts = _run(tmp_path / "a", "infonce", micro, dropout=0.3)
    ref = _run(tmp_path / "b", "infonce", None, dropout=0.3)
    batch = _batch(ref)
    torch.manual_seed(7)
    chunks = [slice(i, i + micro) for i in range(0, 8, micro)]
    embs = [(ref.model.embed_images(batch.image_feats[c]), ref.model.embed_texts(batch.text_feats[c])) for c in chunks]
    rng_after = torch.get_rng_state()
    step = Step(batch, torch.cat([e[0] for e in embs]), torch.cat([e[1] for e in embs]), 0)
    out: dict[str, torch.Tensor] = {}
    for c in ref.components:
        out = c.add_terms(step, out)
    ref.opt.zero_grad()
    out["loss"].backward()
    torch.manual_seed(7)
    got = _rank_update(parts, _batch(parts))
    assert torch.equal(torch.get_rng_state(), rng_after)  # the RNG goes on as after one draw per micro-batch
    assert float(got["loss"].detach()) == pytest.approx(float(out["loss"].detach()), abs=1e-6)
    g_ref, g_parts = _grads(ref), _grads(parts)
    assert g_ref.keys() == g_parts.keys()
    for name in g_ref:
        _assert_close(g_parts[name], g_ref[name], name)


def _history(res: object) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in res.history]  # type: ignore[attr-defined]


def test_a_short_run_trains_the_same_in_micro_batches(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    cfg = TrainConfig(epochs=3, batch_size=12, lr=1e-2, patience=0)
    whole = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "a")
    parts = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "b",
                              execution=ExecutionConfig(micro_batch=5))
    for a, b in zip(_history(whole), _history(parts), strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["val_rsum"] == pytest.approx(a["val_rsum"], abs=1e-6)


def test_streamed_rows_train_the_same_history(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    cfg = TrainConfig(epochs=3, batch_size=12, lr=1e-2, patience=0)
    whole = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "a")
    streamed = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "b",
                                 execution=ExecutionConfig(stream_batches=True))
    assert _history(streamed) == _history(whole)


def test_streamed_rows_are_the_batch_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The batches themselves: indices and feature rows equal to the last bit, batch by batch."""
    import xmr.training.trainer as trainer

    seen: dict[bool, list[tuple[np.ndarray, ...]]] = {True: [], False: []}
    real = trainer._rank_update

    def recording(run: TrainingRun, batch: Batch) -> dict[str, torch.Tensor]:
        seen[bool(run.execution.stream_batches)].append(tuple(
            t.numpy().copy() for t in (batch.images, batch.texts, batch.groups, batch.image_feats, batch.text_feats)))
        return real(run, batch)

    monkeypatch.setattr(trainer, "_rank_update", recording)
    pairs, val = _toy_problem()
    cfg = TrainConfig(epochs=2, batch_size=12, lr=1e-2, patience=0)
    for stream, out in ((False, "a"), (True, "b")):
        train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / out,
                          execution=ExecutionConfig(stream_batches=stream))
    assert len(seen[True]) == len(seen[False]) == 6
    for a, b in zip(seen[False], seen[True]):
        assert all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))


class _Component:
    def __init__(self, name: str, micro_batches: bool = True, reads_epoch_features: bool = False) -> None:
        self.name, self.about = name, name
        self.micro_batches, self.reads_epoch_features = micro_batches, reads_epoch_features


def test_what_cannot_run_so_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="gen cannot train in micro-batches; leave micro_batch off"):
        check_execution(ExecutionConfig(micro_batch=2), [_Component("gen", micro_batches=False)])  # type: ignore[list-item]
    with pytest.raises(XmrError, match="cross reads the whole epoch's features"):
        check_execution(ExecutionConfig(stream_batches=True),
                        [_Component("cross", reads_epoch_features=True)])  # type: ignore[list-item]
    check_execution(ExecutionConfig(micro_batch=2, stream_batches=False),
                    [_Component("cross", reads_epoch_features=True)])  # type: ignore[list-item]
    with pytest.raises(XmrError, match="micro_batch"):
        ExecutionConfig(micro_batch=0)
    # the components' own declarations (read from their classes)
    from xmr.objectives.cross_style import CrossStyleTerm
    from xmr.objectives.generative import GenerativePaths
    from xmr.objectives.sparse import SparseAlignment

    for cls, about in ((GenerativePaths, "GXN's generative paths"), (SparseAlignment, "A3VSE's pseudo pairs")):
        with pytest.raises(XmrError, match=f"{about}.* cannot train in micro-batches"):
            check_execution(ExecutionConfig(micro_batch=2), [object.__new__(cls)])
    with pytest.raises(XmrError, match="the cross-style term reads the whole epoch's features"):
        check_execution(ExecutionConfig(stream_batches=True), [object.__new__(CrossStyleTerm)])
    check_execution(ExecutionConfig(micro_batch=2), [object.__new__(CrossStyleTerm)])


def test_trained_batch_statistics_refuse_micro_batches(tmp_path: Path) -> None:
    run = _run(tmp_path, "infonce", 2)
    run.model.bn = torch.nn.BatchNorm1d(3)  # a layer that learns batch statistics, in training mode
    run.model.bn.train()
    from xmr.training.execution import check_batch_statistics

    with pytest.raises(XmrError, match="BatchNorm"):
        check_batch_statistics(run.model, run.execution)


def test_the_loss_scale_is_kept_in_last_pt(tmp_path: Path) -> None:
    """fp16's GradScaler state survives a resume (a CPU scaler stands in for the CUDA one); a ``last.pt``
    without it (older, or another precision) resumes with the scaler as it starts."""
    module = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(module.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0, growth_interval=1)
    for _ in range(3):  # three clean steps: the scale doubles each time
        opt.zero_grad()
        scaler.scale(module(torch.ones(1, 3)).sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 512.0
    save_resume_state(tmp_path / "last.pt", module, opt, sched, TrainState(), scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1)
    restore_resume_state(tmp_path / "last.pt", module, opt, sched, scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict()
    save_resume_state(tmp_path / "old.pt", module, opt, sched, TrainState())  # no scaler kept
    assert "scaler" not in torch.load(tmp_path / "old.pt", weights_only=True)
    other = torch.amp.GradScaler("cpu", init_scale=8.0)
    restore_resume_state(tmp_path / "old.pt", module, opt, sched, scaler=other)
    assert other.get_scale() == 8.0


def test_xmr_train_passes_the_execution_options(tmp_path: Path, shapes_manifest: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    """``--micro-batch``, ``--grad-checkpointing``, ``--stream-batches`` reach the trainer (not the run's config:
    the run resumes with other ones); ``--help`` shows ExecutionConfig's defaults; the composed task refuses them."""
    from tests.hostile import cli_error
    from tests.test_runtime import TOY

    import xmr.workflows.train as workflow
    from xmr.cli import build_parser, main

    seen: list[ExecutionConfig | None] = []
    real = workflow.train_joint_model

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("execution"))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(workflow, "train_joint_model", recording)
    out, cache = tmp_path / "run", tmp_path / "cache"
    short = [*TOY[:-6], "--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--cache-dir", str(cache)]
    opts = ["--micro-batch", "5", "--grad-checkpointing", "--stream-batches"]
    assert main(["-q", "train", str(shapes_manifest), "--out", str(out), *short]) == 0
    assert main(["-q", "train", str(shapes_manifest), "--out", str(out), *short, *opts]) == 0  # the same run
    assert main(["-q", "train", str(shapes_manifest), "--out", str(tmp_path / "other"), *short, *opts]) == 0
    assert seen == [ExecutionConfig(), *[ExecutionConfig(micro_batch=5, checkpointing=True, stream_batches=True)] * 2]
    assert len(json.loads((tmp_path / "other" / "history.json").read_text())) == 2
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())  # type: ignore[union-attr]
    assert "accumulate the exact gradient of the whole batch" in text and "(default: none)" in text
    assert "--micro-batch does not apply to --task composed" in cli_error(
        ["train", shapes_manifest, "--out", tmp_path / "c", "--task", "composed", "--micro-batch", "4"], capsys)


def test_checkpointing_switches_on_the_tails_that_have_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from xmr.training.execution import enable_checkpointing

    class Tail(torch.nn.Module):
        on = False

        def set_checkpointing(self, on: bool) -> None:
            self.on = on

    run = _run(tmp_path, "infonce", None)
    assert enable_checkpointing(run.model, True) == 0 and "no fine-tuned encoder tail" in caplog.text
    run.model.image_tail = Tail()
    assert enable_checkpointing(run.model, False) == 0 and not run.model.image_tail.on
    assert enable_checkpointing(run.model, True) == 1 and run.model.image_tail.on


def test_rows_stream_by_themselves_when_big_on_an_accelerator() -> None:
    from xmr.runtime.device import Runtime
    from xmr.training.execution import streams

    gpu, cpu = Runtime(torch.device("cuda")), Runtime(torch.device("cpu"))  # no CUDA needed to name one
    limit = ExecutionConfig().stream_row_bytes
    big = np.zeros((2, limit // 2), np.float16)  # exactly the limit per row
    small = np.zeros((2, limit // 4 - 1), np.float32)
    assert streams(ExecutionConfig(), gpu, (big, small), [])
    assert not streams(ExecutionConfig(), gpu, (small, small), [])
    assert not streams(ExecutionConfig(), cpu, (big, big), [])  # the CPU's tensors are the arrays themselves
    assert streams(ExecutionConfig(stream_batches=True), cpu, (small, small), [])
    assert not streams(ExecutionConfig(stream_batches=False), gpu, (big, big), [])
    reader = _Component("cross", reads_epoch_features=True)
    assert not streams(ExecutionConfig(), gpu, (big, big), [reader])  # type: ignore[list-item]
