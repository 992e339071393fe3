"""``xmr encode --engine ray``: the same shards (and features) as the single-process engine, re-runs skip
finished partitions, bad images and failing partitions are reported by item, a dead address is one line.

The tests share one local Ray cluster (``ray.init(num_cpus=2)``), started by the ``ray_cluster`` fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xmr.cli import main
from xmr.data.manifest import read_manifest, write_manifest
from xmr.encoders import create_image_encoder, create_text_encoder
from xmr.errors import XmrError
from xmr.workflows.features import encode_items
from xmr.workflows.ray_encode import RayEncodeConfig, encode_in_process, encode_with_ray
from xmr.workflows.shards import iter_shards, read_shard, shard_name

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 << 20)
    yield
    ray.shutdown()


@pytest.fixture
def manifest(toy_run: tuple[Path, Path], tmp_path: Path) -> Path:
    run, _ = toy_run
    items = read_manifest(json.loads((run / "run.json").read_text())["manifest"])
    out = tmp_path / "m.jsonl"
    write_manifest(items, out)
    return out


ENC = {"image_encoder": "toy-image", "text_encoder": "toy-text"}


def test_ray_shards_equal_the_single_process_ones(ray_cluster: None, manifest: Path, tmp_path: Path) -> None:
    items = read_manifest(manifest)
    local = encode_in_process(items, **ENC, shards=tmp_path / "local", cache_dir=tmp_path / "c1", partitions=5)
    remote = encode_with_ray(items, **ENC, shards=tmp_path / "ray", cache_dir=tmp_path / "c2",  # its own cache:
                             config=RayEncodeConfig(partitions=5, actors=2))  # nothing is read from the other's
    assert local.encoded == remote.encoded == (0, 1, 2, 3, 4) and not remote.failed
    whole = encode_items(items, image_encoder=create_image_encoder("toy-image"),
                         text_encoder=create_text_encoder("toy-text"), cache_dir=tmp_path / "c3")
    a, b = list(iter_shards(tmp_path / "local")), list(iter_shards(tmp_path / "ray"))
    # two processes at different thread counts sum in different orders: equal up to float32 rounding
    # (1.5e-8 seen on a loaded machine), far below any real difference (features are ~unit scale)
    close = {"rtol": 0, "atol": 1e-6}
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.image_feats, y.image_feats, **close)
        np.testing.assert_allclose(x.text_feats, y.text_feats, **close)
        assert x.texts == y.texts and [i.id for i in x.items] == [i.id for i in y.items]
    # the shards in order are the single-process encode of the whole manifest
    np.testing.assert_allclose(np.concatenate([s.image_feats for s in b]), whole.image_feats, **close)
    assert [i.id for s in b for i in s.items] == [i.id for i in whole.items]


def test_a_rerun_skips_finished_partitions(ray_cluster: None, manifest: Path, tmp_path: Path) -> None:
    items = read_manifest(manifest)
    config = RayEncodeConfig(partitions=4, actors=2)
    encode_with_ray(items, **ENC, shards=tmp_path / "s", cache_dir=tmp_path / "c", config=config)
    (tmp_path / "s" / shard_name(2)).unlink()  # as if the run had stopped before partition 2
    kept = (tmp_path / "s" / shard_name(0)).stat().st_mtime_ns
    again = encode_with_ray(items, **ENC, shards=tmp_path / "s", cache_dir=tmp_path / "c", config=config)
    assert again.encoded == (2,) and again.skipped == (0, 1, 3)
    assert (tmp_path / "s" / shard_name(0)).stat().st_mtime_ns == kept
    assert len(list(iter_shards(tmp_path / "s"))) == 4


def test_bad_images_and_failing_partitions_are_reported(ray_cluster: None, manifest: Path, tmp_path: Path) -> None:
    items = read_manifest(manifest)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    items[3] = type(items[3])(**{**items[3].__dict__, "image": str(broken)})
    report = encode_with_ray(items, **ENC, shards=tmp_path / "s", cache_dir=tmp_path / "c",
                             config=RayEncodeConfig(partitions=4, actors=1))
    assert [b["id"] for b in report.bad_items] == [items[3].id] and not report.failed
    assert items[3].id not in [i.id for i in read_shard(tmp_path / "s" / shard_name(0)).items]
    # a partition whose images are all gone fails every attempt; the other partitions finish
    gone = [type(it)(**{**it.__dict__, "image": str(tmp_path / f"missing{i}.png")}) for i, it in enumerate(items[:16])]
    report = encode_with_ray(gone + items[16:], **ENC, shards=tmp_path / "s2", cache_dir=tmp_path / "c",
                             config=RayEncodeConfig(partitions=4, actors=2, retries=1))
    assert list(report.failed) == [0] and "none of the 16 images could be read" in report.failed[0]
    assert report.encoded == (1, 2, 3)


def test_a_shard_folder_of_another_plan_is_refused(ray_cluster: None, manifest: Path, tmp_path: Path) -> None:
    items = read_manifest(manifest)
    encode_in_process(items, **ENC, shards=tmp_path / "s", cache_dir=tmp_path / "c", partitions=2)
    with pytest.raises(XmrError, match="holds the shards of another manifest or partition count"):
        encode_with_ray(items, **ENC, shards=tmp_path / "s", cache_dir=tmp_path / "c",
                        config=RayEncodeConfig(partitions=3))
    with pytest.raises(XmrError, match="holds the shards of other encoders"):  # refused before any encoding
        encode_with_ray(items, image_encoder="toy-image", text_encoder="minilm-l6", shards=tmp_path / "s",
                        cache_dir=tmp_path / "c", config=RayEncodeConfig(partitions=2))


def test_the_cli_and_an_address_nobody_answers(ray_cluster: None, manifest: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-q", "encode", str(manifest), "--image-encoder", "toy-image", "--text-encoder", "toy-text",
            "--cache-dir", str(tmp_path / "c"), "--engine", "ray", "--partitions", "3", "--shards", str(tmp_path / "s")]
    assert main(argv) == 0
    assert "encoded 3 of 3 partitions (0 done before)" in capsys.readouterr().out
    ray.shutdown()  # the CLI must reach a cluster itself now
    try:
        assert main([*argv, "--address", "127.0.0.1:9"]) == 2  # nothing listens on the discard port
        err = capsys.readouterr().err.strip()
        assert err.startswith("xmr: error: cannot reach the Ray cluster at 127.0.0.1:9") and "\n" not in err
        assert main([*argv[:-2], "--shards", str(tmp_path / "s3"), "--address", "nowhere"]) == 2
        assert "give auto, HOST:PORT or ray://HOST:PORT" in capsys.readouterr().err
        assert not (tmp_path / "s3" / shard_name(0)).exists()
    finally:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 << 20)
    shutil.rmtree(tmp_path / "s")


def test_actors_ask_for_a_gpu_each_when_the_device_is_cuda() -> None:
    """The actor options chosen (no GPU needed: a runtime naming CUDA is enough): on CUDA one GPU per actor
    by default (one model per GPU) and the encoders on it; on the CPU none, as before."""
    import torch

    from xmr.runtime.device import CPU_FP32, Runtime
    from xmr.workflows.ray_encode import ActorPlacement, actor_placement

    cuda = Runtime(torch.device("cuda"), "fp32")
    assert actor_placement(RayEncodeConfig(), None) == ActorPlacement(1.0, 0.0, "cpu")
    assert actor_placement(RayEncodeConfig(cpus_per_actor=2), CPU_FP32) == ActorPlacement(2.0, 0.0, "cpu")
    assert actor_placement(RayEncodeConfig(), cuda) == ActorPlacement(1.0, 1.0, "cuda")
    assert actor_placement(RayEncodeConfig(gpus_per_actor=0.5), cuda) == ActorPlacement(1.0, 0.5, "cuda")
    assert actor_placement(RayEncodeConfig(gpus_per_actor=0), cuda) == ActorPlacement(1.0, 0.0, "cpu")  # forced off
    with pytest.raises(XmrError, match="the command runs on cpu") as e:
        actor_placement(RayEncodeConfig(gpus_per_actor=1), CPU_FP32)
    assert e.value.fields["fix"].value == "cuda"
    with pytest.raises(XmrError, match="gpus_per_actor"):
        RayEncodeConfig(gpus_per_actor=-1)
    # the pool: at most as many actors as the cluster's GPUs hold; CPU actors as asked
    gpu = ActorPlacement(1.0, 1.0, "cuda")
    assert [gpu.pool_size(2, g) for g in (1, 2, 8)] == [1, 2, 2]
    assert ActorPlacement(1.0, 0.5, "cuda").pool_size(8, 2) == 4
    assert ActorPlacement(1.0, 0.0, "cpu").pool_size(3, 0) == 3
    with pytest.raises(XmrError, match="the Ray cluster has 0"):
        gpu.pool_size(2, 0)


def test_a_cuda_run_on_a_cluster_without_gpus_is_refused(ray_cluster: None, manifest: Path, tmp_path: Path) -> None:
    import torch

    from xmr.runtime.device import Runtime

    with pytest.raises(XmrError, match="the Ray cluster has 0"):
        encode_with_ray(read_manifest(manifest), image_encoder="toy-image", text_encoder="toy-text",
                        shards=tmp_path / "s", cache_dir=tmp_path / "c", config=RayEncodeConfig(partitions=2),
                        runtime=Runtime(torch.device("cuda"), "fp32"))
    with pytest.raises(XmrError, match="fp32 only"):
        encode_in_process(read_manifest(manifest), image_encoder="toy-image", text_encoder="toy-text",
                          shards=tmp_path / "s2", runtime=Runtime(torch.device("cpu"), "bf16"))
    assert not (tmp_path / "s2").exists()
