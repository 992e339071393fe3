"""Model ids resolved from the local Hugging Face cache (``hf-clip:org/name``), strictly offline.

The cache is built here in the hub client's layout (``models--org--name/{refs,snapshots,blobs}``,
snapshot files linked to blobs) around tiny random CLIPs (``test_hf_clip.make_clip``); every test
runs with sockets refused, so nothing can be fetched. The reference for where an id
resolves is the hub client itself (``snapshot_download(..., local_files_only=True)``); for the
features, the same checkpoint given as a folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from xmr.encoders import canonical_encoder_name, create_image_encoder, create_text_encoder
from xmr.encoders.hub_cache import hub_cache_dir, parse_model_id, snapshot_commit
from xmr.errors import XmrError

from hostile import cli_error
from test_hf_clip import make_clip

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def cache_model(cache: Path, repo: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``folder``'s files into ``cache`` as the hub client does: blobs by content, the snapshot's
    files linked to them, ``refs/<ref>`` holding the commit. Returns the snapshot folder."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    for f in sorted(folder.iterdir()):
        blob = root / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / f.name)
    for ref in refs:
        (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(autouse=True)
def offline(no_network: None) -> None:
    """Every test here runs with connections refused (conftest's ``no_network``)."""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """HF_HOME with ``org/tiny-clip``: ``main`` -> a seed-0 CLIP, tag ``v1`` -> a seed-1 CLIP."""
    root = tmp_path_factory.mktemp("hub")
    a, b = make_clip(root / "src-a", seed=0), make_clip(root / "src-b", seed=1)
    cache = root / "home" / "hub"
    snap_a = cache_model(cache, "org/tiny-clip", a, COMMIT_A)
    snap_b = cache_model(cache, "org/tiny-clip", b, COMMIT_B, refs=("v1",))
    return {"home": root / "home", "cache": cache, "a": a, "b": b, "snap_a": snap_a, "snap_b": snap_b}


@pytest.fixture
def hf_home(hub: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(hub["home"]))
    return hub


def test_ids_resolve_where_the_hub_client_does(hf_home: dict[str, Path]) -> None:
    from huggingface_hub import snapshot_download

    cache = hf_home["cache"]
    assert hub_cache_dir() == cache
    for spec, snap in (("org/tiny-clip", "snap_a"), ("org/tiny-clip@main", "snap_a"), ("org/tiny-clip@v1", "snap_b"),
                       (f"org/tiny-clip@{COMMIT_B}", "snap_b")):
        model = parse_model_id(spec)
        assert model is not None
        ours, commit = snapshot_commit(model)
        theirs = snapshot_download(model.repo, revision=model.revision, cache_dir=cache, local_files_only=True)
        assert ours == Path(theirs) == hf_home[snap] and commit == hf_home[snap].name


def test_cache_folder_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert hub_cache_dir() == tmp_path / "me" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", "~/hf")
    assert hub_cache_dir() == tmp_path / "me" / "hf" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "old"))
    assert hub_cache_dir() == tmp_path / "old"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))
    assert hub_cache_dir() == tmp_path / "new"


def test_parse_model_id() -> None:
    assert parse_model_id("org/name") is not None and parse_model_id("org/name").revision == "main"  # type: ignore[union-attr]
    assert parse_model_id("name@v1.0").repo == "name"  # type: ignore[union-attr]
    for not_an_id in ("/abs/path", "../up", "a/b/c", "a b", "org/..", "org/name@../x", "", "C:x"):
        assert parse_model_id(not_an_id) is None, not_an_id


def test_hf_clip_id_gives_the_checkpoints_features_and_id(hf_home: dict[str, Path], tmp_path: Path) -> None:
    a, b = hf_home["a"], hf_home["b"]
    texts = ["a red circle", "blue"]
    for spec, folder in (("org/tiny-clip", a), ("org/tiny-clip@v1", b)):
        by_id, by_folder = create_text_encoder(f"hf-clip:{spec}"), create_text_encoder(f"hf-clip:{folder}")
        assert by_id.encoder_id == by_folder.encoder_id  # the content digest: the same files, the same id
        np.testing.assert_array_equal(by_id.encode_batch(texts), by_folder.encode_batch(texts))
    img_main, img_v1 = create_image_encoder("hf-clip:org/tiny-clip"), create_image_encoder("hf-clip:org/tiny-clip@v1")
    assert img_main.encoder_id != img_v1.encoder_id
    assert img_main.checkpoint.path == hf_home["snap_a"]
    # a run stores the id pinned to the commit it read
    assert canonical_encoder_name("hf-clip:org/tiny-clip") == f"hf-clip:org/tiny-clip@{COMMIT_A}"
    assert canonical_encoder_name("hf-clip:org/tiny-clip@v1") == f"hf-clip:org/tiny-clip@{COMMIT_B}"
    assert canonical_encoder_name("hf-clip:org/missing") == "hf-clip:org/missing"  # as typed; refused when used


def test_a_local_folder_of_that_name_comes_first(hf_home: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_clip(tmp_path / "org" / "tiny-clip", seed=1)
    monkeypatch.chdir(tmp_path)
    enc = create_image_encoder("hf-clip:org/tiny-clip")
    assert enc.checkpoint.path == (tmp_path / "org" / "tiny-clip").resolve()
    assert canonical_encoder_name("hf-clip:org/tiny-clip") == f"hf-clip:{tmp_path / 'org' / 'tiny-clip'}"


@pytest.mark.parametrize("spec,needle", [
    ("org/nope", r"hf-clip org/nope: no such local folder, and the Hugging Face cache .*/home/hub has no "
                 r"models--org--nope \(xmr never downloads"),
    ("org/tiny-clip@v9", r"has no revision 'v9' of it \(no file .*models--org--tiny-clip/refs/v9\)"),
    ("org/tiny-clip@" + "c" * 40, r"has no snapshot c{40}: no folder .*snapshots/c{40}$"),
    ("org/dangling", r"has no snapshot d{40}: no folder .*models--org--dangling/snapshots/d{40} "
                     r"\(.*refs/main names it\)"),
])
def test_missing_ids_are_one_line_naming_where_it_looked(spec: str, needle: str, hf_home: dict[str, Path],
                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from xmr.bench.shapes import make_shapes_dataset

    dangling = hf_home["cache"] / "models--org--dangling" / "refs"
    dangling.mkdir(parents=True, exist_ok=True)
    (dangling / "main").write_text("d" * 40)  # a ref to a snapshot the cache no longer holds
    with pytest.raises(XmrError, match=needle) as e:
        create_text_encoder(f"hf-clip:{spec}")
    assert "\n" not in str(e.value)
    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    err = cli_error(["encode", manifest, "--image-encoder", "toy-image", "--text-encoder", f"hf-clip:{spec}",
                     "--cache-dir", tmp_path / "c"], capsys)
    assert err.startswith("xmr: error: hf-clip ") and str(hf_home["cache"]) in err
