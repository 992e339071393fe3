"""Encoding throughput of the xmr pipeline vs the bare model forward, on the same inputs.

Measures, in one run (items/s; the inputs are cut into ``--slices`` slices and every case runs on
every slice in every one of ``--repeat`` rounds, in rotating order; medians are reported and
the ratio is the median of the paired per-sample ratios, which is robust to a noisy machine):

* images: ``xmr.encoders.encode_images`` (EfficientNet-Lite0) into a FRESH temporary cache
  dir each round -- file hashing, PIL load + preprocessing, batching, forward and cache
  writes -- vs the bare ``forward`` on the same batches, already preprocessed into
  normalised tensors in memory (the baseline; goal: xmr >= 0.9x);
* texts: ``xmr.encoders.encode_texts`` (all-MiniLM-L6-v2), fresh cache each round, vs the
  SentenceTransformer ``encode`` call on the same strings in batches of the same size;
* warm re-runs: the same xmr call against an already filled cache (should be >> 1x);
* a breakdown of the image pipeline's parts (hashing, load+preprocess, stacking, cache write),
  each timed alone, as a fraction of the bare forward time.

Images are real emoji PNGs (64x64 and 224x224, several styles) from
``$XMR_CACHE_DIR/datasets/emoji`` (default /tmp/xmr-cache) when that dataset is present,
otherwise random-content PNGs generated in a temp dir. Example (about 3-4 min on 2 cores)::

    python benchmarks/bench_encode.py --n-images 256 --n-texts 2000 --repeat 5 --slices 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xmr.bench.common import command_line, fmt_ratio, interleaved, load_note, markdown, median, paired_ratio, spread
from xmr.encoders import FeatureCache, create_encoder, encode_images, encode_texts
from xmr.encoders.efficientnet import to_model_input
from xmr.utils.io import sha1_file


def emoji_images(root: Path, n: int) -> list[Path] | None:
    """``n`` emoji PNGs with distinct content, spread evenly over the manifest (all styles/sizes)."""
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        return None
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    step = max(1, len(rows) // (2 * n))
    out, seen = [], set()
    for r in rows[::step] + rows:
        p = root / r["image"]
        if p.is_file() and (h := sha1_file(p)) not in seen:
            seen.add(h)
            out.append(p)
        if len(out) == n:
            return out
    return out or None


def random_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` random-content PNGs, alternately 64x64 RGBA and 224x224 RGB."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        if i % 2:
            arr, mode = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB"
        else:
            arr, mode = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "RGBA"
        paths.append(folder / f"img{i:05d}.png")
        Image.fromarray(arr, mode).save(paths[-1])
    return paths


def captions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct synthetic captions of 6-10 words."""
    adj = "red small old happy tiny blue striped wet shiny fluffy green sleepy wooden bright".split()
    noun = "dog cat man woman child bird horse car boat train robot chef dancer farmer".split()
    verb = "running sitting jumping standing sleeping waiting walking reading looking smiling".split()
    place = ["on the beach", "in a park", "near the river", "at the station", "under a tree",
             "in the kitchen", "on a busy street", "next to a fence", "in the snow", "by the window"]
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add(f"a {rng.choice(adj)} {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} "
                f"{rng.choice(place)}")
    return sorted(out, key=lambda _: rng.random())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--n-texts", type=int, default=2000)
    ap.add_argument("--image-batch", type=int, default=32, help="images per forward (xmr default 32)")
    ap.add_argument("--text-batch", type=int, default=64, help="texts per forward (xmr default 64)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds over all slices (median)")
    ap.add_argument("--slices", type=int, default=4, help="inputs cut into this many timed slices")
    ap.add_argument("--cache-root", default=os.environ.get("XMR_CACHE_DIR", "/tmp/xmr-cache"),
                    help="where datasets/emoji is looked for (only read)")
    ap.add_argument("--synthetic-images", action="store_true", help="use random PNGs even if emoji exist")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# before: {load_note(0)}", flush=True)
    work = tempfile.TemporaryDirectory(prefix="xmr-bench-encode-")
    tmp = Path(work.name)
    n_rounds = [0]

    def fresh_dir() -> Path:
        n_rounds[0] += 1
        return tmp / f"cache-{n_rounds[0]}"

    # ---------------- images ----------------
    paths = None if args.synthetic_images else emoji_images(Path(args.cache_root) / "datasets" / "emoji",
                                                            args.n_images)
    source = "emoji PNGs" if paths else "random PNGs"
    if not paths:
        (tmp / "png").mkdir()
        paths = random_images(tmp / "png", args.n_images)
    n_img, ibs = len(paths), args.image_batch
    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    sizes = sorted(set(sizes))
    print(f"images: {n_img} {source}, sizes {sizes[:4]}{'...' if len(sizes) > 4 else ''}, batch {ibs}",
          flush=True)
    img_enc = create_encoder("efficientnet-lite0")
    arrays = [img_enc.load(p) for p in paths]
    per = -(-n_img // args.slices // ibs) * ibs  # images per slice, whole batches
    sl = [slice(i, i + per) for i in range(0, n_img, per)]
    batches = [[to_model_input(arrays[i:i + ibs]) for i in range(s.start, min(s.stop, n_img), ibs)] for s in sl]
    img_enc.forward(batches[0][0])  # load weights + one untimed forward
    warm_img = tmp / "warm-images"
    encode_images(img_enc, paths, cache_dir=warm_img, batch_size=ibs, show_progress=False)
    feats_for_put = np.random.default_rng(0).standard_normal((n_img, img_enc.dim)).astype(np.float32)
    keys = [sha1_file(p) for p in paths]

    def xmr_cold_images(s: int) -> None:
        res = encode_images(img_enc, paths[sl[s]], cache_dir=fresh_dir(), batch_size=ibs, show_progress=False)
        assert res.n_encoded == len(paths[sl[s]]) and res.n_bad == 0, (res.n_encoded, res.bad[:1])

    def xmr_warm_images(s: int) -> None:
        res = encode_images(img_enc, paths[sl[s]], cache_dir=warm_img, batch_size=ibs, show_progress=False)
        assert res.n_cached == len(paths[sl[s]])

    def load_2threads(s: int) -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(img_enc.load, paths[sl[s]]))

    img_cases = {
        "bare forward": lambda s: [img_enc.forward(x) for x in batches[s]],
        "xmr encode_images (fresh cache)": xmr_cold_images,
        "xmr encode_images (warm cache)": xmr_warm_images,
        "  part: sha1 of files": lambda s: [sha1_file(p) for p in paths[sl[s]]],
        "  part: load+preprocess (2 threads)": load_2threads,
        "  part: load+preprocess (1 thread)": lambda s: [img_enc.load(p) for p in paths[sl[s]]],
        "  part: to_model_input (stack+normalise)": lambda s: [to_model_input(arrays[i:i + ibs])
                                                               for i in range(sl[s].start, sl[s].stop, ibs)],
        "  part: cache open+put (1 shard)": lambda s: FeatureCache(fresh_dir(), img_enc.describe()).put(
            keys[sl[s]], feats_for_put[sl[s]]),
    }
    img_times = interleaved(img_cases, args.repeat, len(sl))
    print(f"# after images: {load_note(torch.get_num_threads())}", flush=True)

    # ---------------- texts ----------------
    texts = captions(args.n_texts)
    tbs = args.text_batch
    txt_enc = create_encoder("minilm-l6")
    st = txt_enc.model
    tper = -(-len(texts) // args.slices // tbs) * tbs
    tsl = [slice(i, i + tper) for i in range(0, len(texts), tper)]
    text_batches = [[texts[i:i + tbs] for i in range(s.start, min(s.stop, len(texts)), tbs)] for s in tsl]
    print(f"texts: {len(texts)} synthetic captions, mean {np.mean([len(t.split()) for t in texts]):.1f} "
          f"words, batch {tbs}", flush=True)

    def bare_text(s: int) -> None:
        for b in text_batches[s]:
            st.encode(b, batch_size=len(b), convert_to_numpy=True, show_progress_bar=False,
                      normalize_embeddings=True)

    bare_text(0)  # untimed warm-up
    warm_txt = tmp / "warm-texts"
    encode_texts(txt_enc, texts, cache_dir=warm_txt, batch_size=tbs, show_progress=False)

    def xmr_cold_texts(s: int) -> None:
        res = encode_texts(txt_enc, texts[tsl[s]], cache_dir=fresh_dir(), batch_size=tbs, show_progress=False)
        assert res.n_encoded == len(texts[tsl[s]])

    def xmr_warm_texts(s: int) -> None:
        assert encode_texts(txt_enc, texts[tsl[s]], cache_dir=warm_txt, batch_size=tbs,
                            show_progress=False).n_cached == len(texts[tsl[s]])

    txt_times = interleaved({"bare forward": bare_text, "xmr encode_texts (fresh cache)": xmr_cold_texts,
                             "xmr encode_texts (warm cache)": xmr_warm_texts}, args.repeat, len(tsl))
    print(f"# after texts: {load_note(torch.get_num_threads())}\n", flush=True)

    rows = []
    for modality, times, sizes in (("image", img_times, [len(paths[x]) for x in sl]),
                                   ("text", txt_times, [len(texts[x]) for x in tsl])):
        base = times["bare forward"]
        for name, ts in times.items():
            part = name.startswith("  part")
            rate = median([sizes[i % len(sizes)] / t for i, t in enumerate(ts)])
            rows.append([modality, name.strip(), f"{rate:,.1f}", f"{median(ts):.3f}",
                         "-" if part else fmt_ratio(paired_ratio(base, ts)),
                         f"{100 / paired_ratio(base, ts)[1]:.1f}%" if part else "", spread(ts)])
    print(markdown(["modality", "method", "items/s", "median s/slice", "ratio vs bare (IQR)", "share of bare time",
                    "spread"], rows))
    print(f"\n{n_img} images in {len(sl)} slices / {len(texts)} texts in {len(tsl)} slices, {args.repeat} "
          f"rounds, torch threads {torch.get_num_threads()}; items/s = median over samples; ratio = median "
          "of paired (same round+slice) bare time / xmr time, i.e. xmr speed relative to bare (goal >= 0.9x), "
          "with its inter-quartile range; spread = (max - min) / 2 / median of the times.")
    print(f"\ncommand: {command_line()}")
    work.cleanup()


if __name__ == "__main__":
    main()
