"""Data-parallel training (CPU, gloo, 127.0.0.1): two processes against one on the same global batch.

Tolerance: two processes compute each batch's embeddings in halves and sum the gradients in another
order, so their numbers differ from one process's by float rounding only (observed <= 3e-7 on the
toy run's losses); the per-epoch train losses and the best checkpoint's weights must agree within
1e-5 (absolute; weights also relative), the validation metrics (multiples of 100/12 on 12
validation items) and the best epoch exactly. The toy model has no dropout: with dropout each
process draws its own masks (:func:`xmr.training.distributed.seed_rank`), so the runs differ by
design.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from xmr.errors import XmrError
from xmr.training.distributed import (
    DistributedConfig,
    World,
    average_gradients,
    config_from_env,
    join_components,
)

WORKER = Path(__file__).parent / "ddp_worker.py"
TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(out: Path, loss: str, epochs: int, *, processes: int, die_at: int | None = None,
         micro_batch: int | None = None) -> list[subprocess.CompletedProcess[str]]:
    """Run the worker as ``processes`` processes (1: without torchrun's variables); their results, rank order."""
    args = [sys.executable, str(WORKER), str(out), loss, str(epochs), *([str(die_at)] if die_at is not None else [])]
    env = {**os.environ, **({"MICRO_BATCH": str(micro_batch)} if micro_batch is not None else {})}
    if processes == 1:
        return [subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)]
    port = _free_port()
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(processes),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
             for r in range(processes)]
    done = []
    for r, p in enumerate(procs):
        try:
            stdout, stderr = p.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
    return done


def _result(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    return result


def _assert_same_run(one: dict[str, Any], two: dict[str, Any]) -> None:
    assert len(one["history"]) == len(two["history"])
    for a, b in zip(one["history"], two["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_rsum"] == pytest.approx(b["val_rsum"], abs=1e-6)
    assert one["best_epoch"] == two["best_epoch"]
    assert one["best"] == pytest.approx(two["best"], abs=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One process's toy runs, by loss."""
    runs = {}
    for loss, epochs in (("infonce", 4), ("vse++", 4)):
        out = tmp_path_factory.mktemp(f"one-{loss}")
        (r,) = _run(out, loss, epochs, processes=1)
        assert r.returncode == 0, r.stderr
        runs[loss] = {**_result(out), "out": str(out)}
    return runs


@pytest.mark.parametrize("loss", ["infonce", "vse++"])  # vse++: two VSE0 warm-up epochs, then the hardest negative
def test_two_processes_train_as_one(loss: str, reference: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    results = _run(tmp_path, loss, 4, processes=2)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    _assert_same_run(reference[loss], _result(tmp_path))
    # the steps were the same: the best checkpoints' weights agree within float rounding
    one = load_file(Path(reference[loss]["out"]) / "best" / "model.safetensors")
    two = load_file(tmp_path / "best" / "model.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-5)


def test_two_processes_in_micro_batches_train_as_one(reference: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """GradCache under data parallelism: each process's share (6 pairs) in micro-batches of 4 and 2; the
    gathered embeddings' gradients return to their process before its micro-batches replay."""
    results = _run(tmp_path, "infonce", 4, processes=2, micro_batch=4)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    _assert_same_run(reference["infonce"], _result(tmp_path))


def test_killed_process_stops_the_job_and_a_rerun_resumes(reference: dict[str, dict[str, Any]],
                                                          tmp_path: Path) -> None:
    rank0, rank1 = _run(tmp_path, "infonce", 4, processes=2, die_at=2)  # rank 1 dies as epoch 3 starts
    assert rank1.returncode == 3
    assert rank0.returncode != 0 and "training process 0 lost the others" in rank0.stderr
    assert "Traceback" not in rank0.stderr
    # what rank 0 wrote is whole: the two finished epochs, no temporary file beside them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "history.json", "last.pt", "train.json"]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["st"]["epoch"] == 2
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2
    alone = tmp_path.parent / f"{tmp_path.name}-alone"  # the same folder resumed by one process
    shutil.copytree(tmp_path, alone)
    results = _run(tmp_path, "infonce", 4, processes=2)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    _assert_same_run(reference["infonce"], _result(tmp_path))
    (r,) = _run(alone, "infonce", 4, processes=1)
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_run(reference["infonce"], _result(alone))


def test_a_run_stopped_in_one_process_resumes_in_two(reference: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """Resume works from any rank count: 1 -> 2 here (2 -> 1 above); the state in ``last.pt`` holds no rank."""
    (r,) = _run(tmp_path, "infonce", 4, processes=1, die_at=2)  # the one process dies as epoch 3 starts
    assert r.returncode == 3
    assert torch.load(tmp_path / "last.pt", weights_only=True)["st"]["epoch"] == 2
    before = json.loads((tmp_path / "history.json").read_text())
    results = _run(tmp_path, "infonce", 4, processes=2)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    history = _result(tmp_path)["history"]
    assert history[:2] == before  # resumed: the first two epochs' rows (their seconds too) are the ones kept
    _assert_same_run(reference["infonce"], _result(tmp_path))


def test_torchrun_trains_a_run_from_the_command_line(tmp_path: Path) -> None:
    from xmr.cli import main

    from conftest import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=2)
    cache = tmp_path / "cache"
    opts = ["--image-encoder", "toy-image", "--text-encoder", "toy-text", "--embed-dim", "16", "--epochs", "2",
            "--batch-size", "16", "--lr", "3e-3", "--patience", "0", "--cache-dir", str(cache)]
    assert main(["-q", "train", str(manifest), "--out", str(tmp_path / "one"), *opts]) == 0
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(_free_port()), "-m", "xmr", "-q", "train", str(manifest),
                        "--out", str(tmp_path / "two"), *opts], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done: best epoch") == 1  # rank 0 alone reports
    assert len(json.loads((tmp_path / "two" / "history.json").read_text())) == 2
    assert (tmp_path / "two" / "best" / "model.safetensors").exists()
    assert json.loads((tmp_path / "two" / "run.json").read_text()) == json.loads((tmp_path / "one" / "run.json")
                                                                                   .read_text())


def test_world_shards_a_batch_into_consecutive_parts() -> None:
    rows = torch.arange(11)
    parts = [World(r, 3).shard(rows) for r in range(3)]
    assert torch.equal(torch.cat(parts), rows) and [len(p) for p in parts] == [3, 4, 4]
    assert World().shard(rows) is rows


def test_config_from_env() -> None:
    assert config_from_env({}) == DistributedConfig()
    cfg = config_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": "29999"})
    assert (cfg.rank, cfg.world_size, cfg.local_rank, cfg.master_port) == (1, 2, 1, 29999)
    with pytest.raises(XmrError, match="must be numbers"):
        config_from_env({"WORLD_SIZE": "two"})
    with pytest.raises(XmrError, match="invalid process rank"):
        config_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_one_process_exchanges_nothing() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    average_gradients([p], World())
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def test_several_processes_need_a_share_of_each_batch() -> None:
    from xmr.objectives.base import ObjectiveComponent

    class Plain(ObjectiveComponent):
        name = "plain"

        def __init__(self) -> None:
            self.rank, self.world_size = 0, 1

    c = Plain()
    join_components([c], World(1, 2), batch_size=4)
    assert (c.rank, c.world_size) == (1, 2)
    with pytest.raises(XmrError, match="smaller than the 4 training processes"):
        join_components([c], World(0, 4), batch_size=2)


def test_each_process_gets_the_gpu_of_its_local_rank() -> None:
    from xmr.runtime.device import process_device

    # one process: as before
    assert process_device("auto", cuda_count=2) == "cuda"
    assert process_device("auto", cuda_count=0, mps=True) == "mps"
    # several processes on a CUDA machine: auto and cuda are cuda:LOCAL_RANK; cuda:N stays as named
    assert process_device("auto", cuda_count=2, local_rank=1) == "cuda:1"
    assert process_device("cuda", cuda_count=4, local_rank=3) == "cuda:3"
    assert process_device("cuda:0", cuda_count=2, local_rank=1) == "cuda:0"
    # no CUDA: the CPU, whatever the rank
    assert process_device("auto", cuda_count=0, local_rank=5) == "cpu"
    assert process_device("cpu", cuda_count=8, local_rank=1) == "cpu"
    # more processes on a machine than GPUs: refused, naming the setting and the local rank
    with pytest.raises(XmrError, match="local rank 2 has no GPU of its own") as e:
        process_device("auto", cuda_count=2, local_rank=2)
    assert e.value.fields["device"].value == "auto"
    with pytest.raises(XmrError, match="torch sees 0 CUDA"):
        process_device("cuda", cuda_count=0, local_rank=0)


def test_the_backend_follows_the_device_unless_forced() -> None:
    from xmr.training.distributed import choose_backend

    assert DistributedConfig().backend == "auto"
    assert choose_backend("auto", torch.device("cpu")) == "gloo"
    assert choose_backend("auto", torch.device("cuda:1")) == "nccl"
    assert choose_backend("gloo", torch.device("cuda:0")) == "gloo"
    assert choose_backend("nccl", torch.device("cuda:0")) == "nccl"
    with pytest.raises(XmrError, match="CUDA tensors only") as e:
        choose_backend("nccl", torch.device("cpu"))
    assert e.value.fields["backend"].value == "nccl"
    assert config_from_env({"RANK": "0", "WORLD_SIZE": "2"}, backend="gloo").backend == "gloo"
    with pytest.raises(XmrError, match="unknown process group backend"):
        DistributedConfig(backend="mpi")


def test_a_process_that_does_not_see_rank_0s_folder_stops(tmp_path: Path) -> None:
    from xmr.training.distributed import check_shared_folder

    check_shared_folder(World(0, 2), tmp_path / "run.json")  # rank 0 wrote it (or is about to)
    (tmp_path / "run.json").write_text("{}")
    check_shared_folder(World(1, 2), tmp_path / "run.json")
    with pytest.raises(XmrError, match="filesystem every machine shares"):
        check_shared_folder(World(1, 2), tmp_path / "train.json")


def test_nccl_forced_on_the_cpu_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.cli import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun starts it: refused before joining any group
    code = main(["train", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--process-backend", "nccl"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("xmr: error: the process group backend --process-backend nccl exchanges CUDA tensors only")


def test_train_help_shows_the_process_backend_default(capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--process-backend {auto,gloo,nccl}" in out and "(default: auto)" in out


def test_what_trains_in_one_process_only_is_refused_naming_its_option(tmp_path: Path) -> None:
    """GXN's generative paths (their own discriminator / self-critical updates) and the composed task train in
    one process: several are refused in one error, which the CLI words with the option (``--generative``,
    ``--task composed``), before the composed task does any work."""
    from xmr.cli.errors import cli_wording
    from xmr.objectives.base import ObjectiveComponent
    from xmr.tasks.composed.config import ComposedRunConfig
    from xmr.tasks.composed.jobs import train_composed_run
    from xmr.training import distributed

    class OwnSteps(ObjectiveComponent):
        name = "generative"
        about = "GXN's generative paths"

        def __init__(self) -> None:
            self.rank, self.world_size = 0, 1

        def steps_before_rank(self) -> list[Any]:
            return [lambda batch, opt: {}]

    join_components([OwnSteps()], World(), batch_size=4)  # one process: trains
    with pytest.raises(XmrError) as e:
        join_components([OwnSteps()], World(1, 2), batch_size=4)
    assert e.value.worded(cli_wording).startswith("GXN's generative paths (--generative) train in one process "
                                                  "only, not in 2")
    token = distributed._WORLD.set(World(0, 2))
    try:
        with pytest.raises(XmrError) as e:
            train_composed_run(ComposedRunConfig(manifest=str(tmp_path / "none.jsonl"),
                                                 triplets=str(tmp_path / "none-triplets.jsonl")), tmp_path / "run")
    finally:
        distributed._WORLD.reset(token)
    assert e.value.worded(cli_wording).startswith("--task composed trains in one process only, not in 2")
    assert not (tmp_path / "run").exists()
