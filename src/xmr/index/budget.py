"""Choose an index that fits a memory budget: flat, HNSW or (OPQ +) IVF-PQ, written on FAISS.

This is the choice autofaiss makes (largest exact structure that fits, otherwise product
quantisation with as many bytes per vector as the budget allows), in a few lines of our own:
autofaiss pins its own FAISS and reads embeddings through its own loader, while xmr already
streams its vectors and needs the choice to be one pure, testable function of ``(n, dim,
budget)``. Every default lives in :class:`AutoIndexConfig`.

The estimates are of the index's resident bytes when searched in RAM (codes, ids, graph links,
centroids, the OPQ matrix) and of the peak while building (the index plus the training sample
and one chunk of vectors being added). A memory-mapped search process (``Index.load(mmap=True)``)
needs far less; the budget is the build- and load-everything bound.

    >>> choose_index(10_000_000, 256, parse_bytes("4GB")).factory
    'OPQ64_256,IVF8192_HNSW32,PQ64np'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from xmr.errors import XmrError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40,
          "TIB": 1 << 40}


def parse_bytes(text: str | int) -> int:
    """``"2GB"``, ``"512MiB"``, ``"1.5G"`` or a number of bytes -> bytes (binary units: 1GB = 2**30)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).upper() not in _UNITS:
            raise XmrError(f"memory budget {text!r}: give a size such as 2GB, 512MB or 1.5G")
        size = float(m.group(1)) * _UNITS[m.group(2).upper()]
        if not math.isfinite(size):  # hundreds of digits overflow the float
            raise XmrError(f"memory budget {str(text)[:20]!r}...: not a finite size")
        value = int(size)
    if value <= 0:
        raise XmrError(f"memory budget {text!r} must be positive")
    return value


def format_bytes(n: float) -> str:
    """``1536 * 2**20`` -> ``"1.50 GB"`` (binary units, as :func:`parse_bytes` reads them)."""
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class AutoIndexConfig:
    """Every default of the budgeted choice (``xmr index --factory auto --memory-budget``).

    Args:
        flat_up_to: exact search while the gallery has at most this many vectors and fits
            (brute force on 2 cores answers ~100 q/s at 100k x 256; beyond, a graph or IVF).
        hnsw_m: links per node of the HNSW graph.
        hnsw_up_to: HNSW while the gallery has at most this many vectors and fits (building a
            graph of 10M vectors on 2 cores takes hours; IVF-PQ takes minutes).
        pq_bytes: bytes per vector tried for PQ, largest first; the first that fits is taken.
        opq: rotate the vectors with OPQ before PQ (it helps PQ on correlated dimensions).
        train_per_list: training vectors per IVF list (FAISS warns below 39).
        max_lists: cap on IVF lists (k-means on 2 cores: 8192 lists x 262k samples takes minutes).
        max_train: cap on the training sample (k-means cost grows with it).
        nprobe_fraction: IVF lists visited per query as a fraction of nlist (at least 16).
        id_bytes: bytes per id held beside each code (int64 in FAISS's inverted lists).
        add_chunk: vectors added per streamed chunk (its float32 copy counts in the build peak).
    """

    flat_up_to: int = 200_000
    hnsw_m: int = 32
    hnsw_up_to: int = 2_000_000
    pq_bytes: tuple[int, ...] = (64, 32, 16, 8)
    opq: bool = True
    train_per_list: int = 39
    max_lists: int = 8192
    max_train: int = 262_144
    nprobe_fraction: float = 1 / 256
    id_bytes: int = 8
    add_chunk: int = 100_000


@dataclass(frozen=True)
class IndexChoice:
    """What :func:`choose_index` picked, with its estimated memory and why."""

    factory: str
    kind: str  # "flat", "hnsw" or "ivfpq"
    index_bytes: int  # resident when loaded into RAM
    build_bytes: int  # peak while building
    nprobe: int
    n_train: int  # training sample size (0: nothing to train)
    reason: str


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` vectors: a power of two near 4 * sqrt(n), at least 1."""
    target = 4 * math.sqrt(max(n, 1))
    return max(1, 1 << round(math.log2(target)))


def flat_bytes(n: int, dim: int) -> int:
    """float32 codes of a flat index."""
    return n * dim * 4


def hnsw_bytes(n: int, dim: int, m: int) -> int:
    """Flat storage plus links: 2M int32 neighbours at level 0, ~M/(M-1) more above, levels."""
    links = 2 * m * 4 + m * 4 / max(m - 1, 1) + 8 + 4
    return int(n * (dim * 4 + links))


def ivfpq_bytes(n: int, dim: int, pq: int, nlist: int, *, opq: bool, id_bytes: int,
                hnsw_m: int) -> int:
    """Codes + ids per vector, the centroids and their HNSW graph, the PQ tables, the OPQ matrix."""
    centroids = hnsw_bytes(nlist, dim, hnsw_m)
    tables = dim * 256 * 4
    rotation = dim * dim * 4 if opq else 0
    return n * (pq + id_bytes) + centroids + tables + rotation


def choose_index(n: int, dim: int, budget: int, config: AutoIndexConfig | None = None) -> IndexChoice:
    """The best index for ``n`` vectors of ``dim`` whose build and search fit in ``budget`` bytes.

    Tried in order: exact (flat) for galleries up to ``flat_up_to``; HNSW up to ``hnsw_up_to``;
    then IVF-PQ with the most bytes per vector that fit (OPQ first when ``opq``), nlist from
    :func:`nlist_for`, an HNSW coarse quantiser (fast assignment of millions of vectors).

    Raises:
        XmrError: no index of these vectors fits ``budget`` (naming the smallest's needs).
    """
    c = config or AutoIndexConfig()
    if n < 1 or dim < 1:
        raise XmrError(f"cannot choose an index for {n} vectors of dim {dim}")
    chunk = min(n, c.add_chunk) * dim * 4
    size = flat_bytes(n, dim)
    if n <= c.flat_up_to and size + chunk <= budget:
        return IndexChoice("Flat", "flat", size, size + chunk, 1, 0,
                           f"{n} vectors fit exactly ({format_bytes(size)})")
    size = hnsw_bytes(n, dim, c.hnsw_m)
    if n <= c.hnsw_up_to and size + chunk <= budget:
        return IndexChoice(f"HNSW{c.hnsw_m}", "hnsw", size, size + chunk, 1, 0,
                           f"an HNSW graph of {n} vectors fits ({format_bytes(size)})")
    nlist = min(nlist_for(n), c.max_lists)
    while nlist > 1 and n < nlist * c.train_per_list // 4:
        nlist //= 2  # too few vectors to train that many lists
    n_train = min(n, c.max_train, max(nlist * c.train_per_list, 10_000))
    nprobe = min(nlist, max(16, round(nlist * c.nprobe_fraction)))
    smallest = None
    for pq in sorted(c.pq_bytes, reverse=True):
        if dim % pq:
            continue
        use_opq = c.opq and pq < dim
        size = ivfpq_bytes(n, dim, pq, nlist, opq=use_opq, id_bytes=c.id_bytes, hnsw_m=c.hnsw_m)
        build = size + chunk + n_train * dim * 4
        smallest = build if smallest is None else min(smallest, build)
        if build <= budget:
            prefix = f"OPQ{pq}_{dim}," if use_opq else ""
            quantizer = f"IVF{nlist}_HNSW{c.hnsw_m}" if nlist >= 1024 else f"IVF{nlist}"
            return IndexChoice(f"{prefix}{quantizer},PQ{pq}np", "ivfpq", size, build, nprobe, n_train,
                               f"{n} vectors compressed to {pq} bytes each ({format_bytes(size)})")
    if smallest is None:
        raise XmrError(f"no PQ size in {c.pq_bytes} divides dim {dim}")
    raise XmrError(f"memory budget {format_bytes(budget)} is too small for any index of {n} vectors of dim {dim}: "
                   f"the smallest (PQ{min(p for p in c.pq_bytes if dim % p == 0)}) needs {format_bytes(smallest)}")
