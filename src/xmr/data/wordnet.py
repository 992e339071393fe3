"""A small reader of the WordNet 3.0 database files (Debian ``wordnet-base``), no NLTK.

WordNet [Fellbaum 1998] names the ImageNet classes (each class is a noun synset) and expands
query words for the unsupervised tag baseline of A3VSE [Huang et al., MM 2019, Sec. 4.3]. Only
four facts are needed: synset by offset, its lemmas, its hypernyms and the synsets of a word.
Those come straight from the plain-text files, documented in ``wndb(5WN)``:

- ``data.<pos>``: one synset per line, **at the byte offset that is its id**, so a lookup is a
  ``seek`` + ``readline``: ``offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt
  [symbol offset pos source/target]... | gloss``;
- ``index.<pos>``: ``lemma pos synset_cnt p_cnt [symbol]... sense_cnt tagsense_cnt
  [offset]...``, offsets in sense order (most frequent first);
- ``<pos>.exc``: irregular forms (``mice mouse``), used by :meth:`WordNet.morphy`.

Why not NLTK: it is not a dependency, and it only reads the Debian files after they are copied
(not symlinked) into a ``corpora/wordnet`` folder beside a hand-written ``lexnames`` file; the
format is simple enough that ~200 lines read it with no extra package or copy step.

Files are looked up in ``$XMR_WORDNET_DIR`` or ``/usr/share/wordnet`` (``make data`` installs
them). Lemmas are returned as WordNet stores them (``golden_retriever``); :attr:`Synset.names`
gives them with spaces.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xmr.errors import XmrError

DEFAULT_DIRS = ("/usr/share/wordnet",)
ENV_VAR = "XMR_WORDNET_DIR"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
HYPERNYM_SYMBOLS = ("@", "@i")  # hypernym, instance hypernym
MISSING = ("WordNet 3.0 not found in {where} (no data.noun); run `make data` "
           "(Debian packages wordnet-base wordnet-sense-index) or set XMR_WORDNET_DIR")
#: the Debian packages holding WordNet 3.0's files (what ``make data`` and :func:`ensure_wordnet` install)
WORDNET_PACKAGES = ("wordnet-base", "wordnet-sense-index")

# Detachment rules of WordNet's morph.c (suffix -> replacement), tried when a form is not listed.
_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
          ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}

#: Function words never looked up (many are WordNet nouns: "a" = vitamin A, "in" = inch ...).
STOPWORDS = frozenset("""
a an the and or but nor of in on at to from by for with without into onto over under above
below up down out off near next is are was were be been being am has have had do does did it
its this that these those there here his her their our your my me him them they we you he she
who whom which what while as than then so very too some any no not all each both one two
""".split())

_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


@dataclass(frozen=True)
class Synset:
    """One WordNet synset.

    Attributes:
        offset: byte offset in ``data.<pos>``, the synset's id (ImageNet's wnid is ``n%08d``).
        pos: ``n``, ``v``, ``a`` (adjectives, satellites included) or ``r``.
        lemmas: its words as stored (``golden_retriever``), in the file's order.
        pointers: ``(symbol, target offset, target pos)`` per pointer (``@`` = hypernym).
        gloss: the definition and examples.
    """

    offset: int
    pos: str
    lemmas: tuple[str, ...]
    pointers: tuple[tuple[str, int, str], ...]
    gloss: str

    @property
    def wnid(self) -> str:
        """ImageNet-style id, e.g. ``n02099601``."""
        return f"{self.pos}{self.offset:08d}"

    @property
    def names(self) -> tuple[str, ...]:
        """The lemmas with spaces for underscores (``golden retriever``)."""
        return tuple(lemma.replace("_", " ") for lemma in self.lemmas)

    @property
    def hypernym_offsets(self) -> tuple[int, ...]:
        """Offsets of the direct hypernyms (class and instance), same part of speech."""
        return tuple(o for s, o, p in self.pointers if s in HYPERNYM_SYMBOLS and p == self.pos)


def parse_data_line(line: str, pos: str) -> Synset:
    """Parse one ``data.<pos>`` line (see the module docstring for the format)."""
    head, _, gloss = line.partition(" | ")
    f = head.split()
    try:
        n_words = int(f[3], 16)
        lemmas = tuple(re.sub(r"\(.*\)$", "", f[4 + 2 * i]) for i in range(n_words))
        at = 4 + 2 * n_words
        n_ptrs = int(f[at])
        ptrs = tuple((f[at + 1 + 4 * i], int(f[at + 2 + 4 * i]),
                      "a" if f[at + 3 + 4 * i] == "s" else f[at + 3 + 4 * i]) for i in range(n_ptrs))
        return Synset(offset=int(f[0]), pos=pos, lemmas=lemmas, pointers=ptrs, gloss=gloss.strip())
    except (IndexError, ValueError):
        raise XmrError(f"not a WordNet data.{POS_FILES[pos]} line: {line[:60]!r}") from None


def find_wordnet_dir(root: str | Path | None = None) -> Path:
    """The folder holding ``data.noun``: ``root``, else ``$XMR_WORDNET_DIR``, else Debian's.

    Raises:
        XmrError: no such folder has ``data.noun`` (naming ``make data`` and the packages).
    """
    if root is not None:
        candidates: Sequence[str | Path] = (root,)
    elif os.environ.get(ENV_VAR):
        candidates = (os.environ[ENV_VAR],)
    else:
        candidates = DEFAULT_DIRS
    for c in candidates:
        if (Path(c) / "data.noun").is_file():
            return Path(c)
    raise XmrError(MISSING.format(where=", ".join(str(c) for c in candidates)))


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, inner ``-``/``'``)."""
    return _TOKEN.findall(text.lower())


class WordNet:
    """Read-only access to a WordNet 3.0 database folder; parsed pieces are cached in memory.

    Args:
        root: folder with ``data.noun``, ``index.noun`` ... (None: see :func:`find_wordnet_dir`).

    Example:
        >>> wn = WordNet()                                  # doctest: +SKIP
        >>> wn.synset(2099601).names[0]                     # doctest: +SKIP
        'golden retriever'
        >>> [s.names[0] for s in wn.hypernyms(wn.synset(2099601))]  # doctest: +SKIP
        ['retriever']
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = find_wordnet_dir(root)
        self._synsets: dict[tuple[str, int], Synset] = {}
        self._index: dict[str, dict[str, tuple[int, ...]]] = {}
        self._exc: dict[str, dict[str, tuple[str, ...]]] = {}

    # -- files ---------------------------------------------------------------------------------

    def _path(self, kind: str, pos: str) -> Path:
        if pos not in POS_FILES:
            raise XmrError(f"pos must be one of {sorted(POS_FILES)}, got {pos!r}")
        return self.root / (f"{kind}.{POS_FILES[pos]}" if kind != "exc" else f"{POS_FILES[pos]}.exc")

    def _lines(self, path: Path) -> Iterable[str]:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                yield from (ln for ln in fh if ln.strip() and not ln.startswith("  "))
        except FileNotFoundError:
            raise XmrError(MISSING.format(where=path)) from None

    def _index_of(self, pos: str) -> dict[str, tuple[int, ...]]:
        if pos not in self._index:
            index: dict[str, tuple[int, ...]] = {}
            for line in self._lines(self._path("index", pos)):
                f = line.split()
                n_synsets, n_ptrs = int(f[2]), int(f[3])
                index[f[0]] = tuple(int(o) for o in f[6 + n_ptrs:6 + n_ptrs + n_synsets])
            self._index[pos] = index
        return self._index[pos]

    def _exceptions(self, pos: str) -> dict[str, tuple[str, ...]]:
        if pos not in self._exc:
            path = self._path("exc", pos)
            table: dict[str, tuple[str, ...]] = {}
            if path.is_file():  # optional: without it only the regular rules apply
                for line in self._lines(path):
                    f = line.split()
                    table[f[0]] = tuple(f[1:])
            self._exc[pos] = table
        return self._exc[pos]

    # -- lookups -------------------------------------------------------------------------------

    def synset(self, offset: int, pos: str = "n") -> Synset:
        """The synset at ``offset`` in ``data.<pos>``.

        Raises:
            XmrError: no synset starts at that offset.
        """
        key = (pos, int(offset))
        if key not in self._synsets:
            path = self._path("data", pos)
            try:
                with open(path, "rb") as fh:
                    fh.seek(int(offset))
                    line = fh.readline().decode("utf-8", errors="replace")
            except FileNotFoundError:
                raise XmrError(MISSING.format(where=path)) from None
            if not line.startswith(f"{int(offset):08d} "):
                raise XmrError(f"no WordNet synset {pos}{int(offset):08d} in {path}")
            self._synsets[key] = parse_data_line(line, pos)
        return self._synsets[key]

    def synset_from_wnid(self, wnid: str) -> Synset:
        """The synset of an ImageNet-style id such as ``n02099601``."""
        if len(wnid) != 9 or wnid[0] not in POS_FILES or not wnid[1:].isdigit():
            raise XmrError(f"not a WordNet id (like n02099601): {wnid!r}")
        return self.synset(int(wnid[1:]), wnid[0])

    def lemma_names(self, offset: int, pos: str = "n") -> tuple[str, ...]:
        """The lemmas of a synset, with spaces (``("golden retriever",)``)."""
        return self.synset(offset, pos).names

    def hypernyms(self, synset: Synset) -> list[Synset]:
        """Direct hypernyms (``@`` and instance ``@i``) of ``synset``."""
        return [self.synset(o, synset.pos) for o in synset.hypernym_offsets]

    def hypernym_closure(self, synset: Synset, *, max_depth: int | None = None) -> dict[int, int]:
        """Every ancestor's offset -> its shortest distance (``synset`` itself is at 0).

        Args:
            max_depth: stop after this many hypernym steps (None: up to the root, ``entity``).
        """
        depth = {synset.offset: 0}
        frontier = [synset]
        d = 0
        while frontier and (max_depth is None or d < max_depth):
            d += 1
            nxt = []
            for s in frontier:
                for o in s.hypernym_offsets:
                    if o not in depth:
                        depth[o] = d
                        nxt.append(self.synset(o, synset.pos))
            frontier = nxt
        return depth

    def morphy(self, word: str, pos: str = "n") -> list[str]:
        """Base forms of ``word`` that WordNet lists (the word itself first when listed).

        Irregular forms come from ``<pos>.exc``, regular ones from morph.c's suffix rules.
        """
        word = word.strip().lower().replace(" ", "_")
        index = self._index_of(pos)
        candidates = [word, *self._exceptions(pos).get(word, ())]
        candidates += [word[: -len(suf)] + rep for suf, rep in _RULES[pos] if word.endswith(suf)]
        out: list[str] = []
        for c in candidates:
            if c and c in index and c not in out:
                out.append(c)
        return out

    def synsets(self, word: str, pos: str = "n") -> list[Synset]:
        """Synsets of ``word`` (any inflection; spaces or ``_``), most frequent sense first."""
        seen: set[int] = set()
        out: list[Synset] = []
        for base in self.morphy(word, pos):
            for o in self._index_of(pos)[base]:
                if o not in seen:
                    seen.add(o)
                    out.append(self.synset(o, pos))
        return out

    def expand_query(self, words: str | Sequence[str], *, pos: str = "n", max_ngram: int = 3,
                     max_senses: int | None = None, hypernym_depth: int = 0,
                     stopwords: frozenset[str] = STOPWORDS) -> list[Synset]:
        """The synsets a query names: what A3VSE's baseline matches against image tags.

        Tokens are matched greedily, longest n-gram first (``ice cream`` before ``ice``);
        stop words are skipped. Each match contributes the synsets of all its senses (up to
        ``max_senses``), which stand for all their synonyms; ``hypernym_depth > 0`` adds their
        ancestors up to that many steps ("retriever" also names "dog"). [A3VSE Sec. 4.3:
        "expand the tokens in a sentence with the synsets defined in WordNet".]

        Args:
            words: a sentence, or already split tokens.

        Returns:
            Distinct synsets in first-seen order.
        """
        tokens = [t for w in ([words] if isinstance(words, str) else words) for t in tokenize(w)]
        out: dict[int, Synset] = {}
        i = 0
        while i < len(tokens):
            for n in range(min(max_ngram, len(tokens) - i), 0, -1):
                phrase = "_".join(tokens[i:i + n])
                if n == 1 and phrase in stopwords:
                    found: list[Synset] = []
                    break
                found = self.synsets(phrase, pos)
                if found:
                    break
            i += max(n, 1) if found else 1
            for s in found[:max_senses]:
                for o in self.hypernym_closure(s, max_depth=hypernym_depth):
                    out.setdefault(o, self.synset(o, pos))
        return list(out.values())


def wordnet_present(root: str | Path | None = None) -> bool:
    """Whether WordNet 3.0's noun files are where :func:`find_wordnet_dir` looks."""
    try:
        found = find_wordnet_dir(root)
    except XmrError:
        return False
    return all((found / f).is_file() for f in ("data.noun", "index.noun", "index.sense"))


def ensure_wordnet(what: str = "WordNet 3.0") -> None:
    """Install Debian's WordNet packages (:data:`WORDNET_PACKAGES`, with apt-get, as ``make data`` does) when
    its files are missing; with ``$XMR_WORDNET_DIR`` set nothing is installed (that folder is the user's).

    Raises:
        XmrError: WordNet is missing and cannot be installed here (one line naming the packages).
    """
    if os.environ.get(ENV_VAR):
        find_wordnet_dir()  # the user's folder: refused by name when it has no WordNet
        return
    from xmr.data.debian import ensure_debian_packages

    ensure_debian_packages(WORDNET_PACKAGES, present=wordnet_present, what=what)

