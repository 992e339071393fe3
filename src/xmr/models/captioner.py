"""GXN's RNN_Dec: a one-layer GRU caption decoder conditioned on the grounded image feature v_l.

"Look, Imagine and Match" (CVPR 2018), Sec. 3.3 and Algorithm 1 (Gen_i2t). The decoder's
hidden state starts at ``tanh(W v_l)``; each step reads the previous word (the start token first)
and scores the next over the caption vocabulary. Token ids: ``0`` padding, ``1`` unknown, ``2``
the end token :data:`EOS_ID`, which also starts every caption (as in NeuralTalk); real words
from ``3``.

* :meth:`CaptionDecoder.forward` -- teacher forcing with scheduled sampling (Bengio et al. 2015):
  with probability ``ss_prob`` a row reads its own sampled word instead of the ground truth.
* :meth:`CaptionDecoder.sample` -- multinomial sampling (SCST's c~) or greedy decoding (c-bar),
  with each chosen word's log-probability.
* :meth:`CaptionDecoder.beam_search` -- beam decoding for users (``xmr caption --beam K``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from xmr.errors import XmrError
from xmr.text.vocab import PAD_ID, VocabConfig, Vocabulary
from xmr.utils.numbers import check_finite_fields

EOS_ID = 2
EOS_TOKEN = "<eos>"


def caption_vocabulary(texts: Iterable[str], min_count: int = 1) -> Vocabulary:
    """The decoder's vocabulary: the end token, then the training captions' words by count."""
    built = Vocabulary.build(texts, VocabConfig(min_count=min_count))
    return Vocabulary([EOS_TOKEN, *built.words[2:]], built.config)


def caption_ids(vocab: Vocabulary, texts: Sequence[str], max_len: int) -> torch.Tensor:
    """Each text's word ids then the end token, cut to ``max_len - 1`` words, padded with 0. Shape: (n, max_len)."""
    out = torch.zeros((len(texts), max_len), dtype=torch.long)
    for i, t in enumerate(texts):
        ids = vocab.encode(t)[: max_len - 1] + [EOS_ID]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def decode_ids(vocab: Vocabulary, ids: Iterable[int]) -> str:
    """Words of ``ids`` up to the first end token (padding dropped, unknown shown as ``<unk>``)."""
    words = vocab.words
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        if i != PAD_ID:
            out.append(words[i])
    return " ".join(out)


@dataclass(frozen=True)
class CaptionerConfig:
    """Architecture of a :class:`CaptionDecoder` (saved in the model config).

    Attributes:
        vocab_size: ids of the caption vocabulary (padding, unknown and the end token included).
        in_dim: size of the conditioning feature v_l (the grounded branch: embed_dim / 2).
        word_dim: word embedding size (GXN: 300).
        hidden_dim: GRU width (GXN: the encoders' 1024; smaller here for a CPU).
        max_len: steps per caption, the end token included.
        dropout: on the GRU output before the word scores.
    """

    vocab_size: int
    in_dim: int
    word_dim: int = 128
    hidden_dim: int = 256
    max_len: int = 20
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_finite_fields(self)
        for name in ("vocab_size", "in_dim", "word_dim", "hidden_dim", "max_len"):
            if int(getattr(self, name)) < (4 if name == "vocab_size" else 1):
                raise XmrError(f"captioner {name} too small: {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise XmrError(f"captioner dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class CaptionDecoder(nn.Module):
    """RNN_Dec of GXN. Shapes: v (B, in_dim); tokens (B, T) int; logits (B, T, vocab_size)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.init_h = nn.Linear(config.in_dim, config.hidden_dim)
        self.words = nn.Embedding(config.vocab_size, config.word_dim, padding_idx=PAD_ID)
        self.gru = nn.GRUCell(config.word_dim, config.hidden_dim)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden_dim, config.vocab_size)

    def _start(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.init_h(v))
        return h, torch.full((len(v),), EOS_ID, dtype=torch.long, device=v.device)

    def _step(self, word: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.gru(self.words(word), h)
        logits = self.out(self.drop(h))
        logits[:, PAD_ID] = -1e4  # padding is never a word; unknown stays (it is in the references)
        return logits, h

    def forward(self, v: torch.Tensor, targets: torch.Tensor, ss_prob: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Teacher-forced scores of ``targets`` (Eq. 4's p(w_t | w_<t, v_l)) with scheduled sampling.

        Args:
            v: the grounded image features. Shape: (B, in_dim).
            targets: w_0..w_{T-1}, the end token included, 0-padded. Shape: (B, T).
            ss_prob: probability that a row reads its own sampled previous word (Algorithm 1,
                Gen_i2t line 2) instead of the ground-truth one; 0 = pure teacher forcing.

        Returns:
            Logits. Shape: (B, T, vocab_size).
        """
        h, word = self._start(v)
        out = []
        for t in range(targets.shape[1]):
            logits, h = self._step(word, h)
            out.append(logits)
            word = targets[:, t]
            if ss_prob > 0 and t + 1 < targets.shape[1]:
                own = torch.rand(len(v), generator=generator).to(v.device) < ss_prob  # drawn on the CPU: seeded alike
                if bool(own.any()):
                    drawn = _multinomial(logits.detach().float().softmax(-1), generator)
                    word = torch.where(own, drawn, word)
        return torch.stack(out, dim=1)

    def sample(self, v: torch.Tensor, *, greedy: bool, max_len: int | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode a caption per row: greedy (GXN's c-bar) or sampled from p (SCST's c~).

        Returns:
            ``(tokens, token_logp, mask)``: the chosen ids (0 after the end token), their
            log-probabilities (with gradient unless called under no_grad), and True through
            each row's end token. Shapes: (B, L) each, L <= max_len.
        """
        h, word = self._start(v)
        max_len = max_len or self.config.max_len
        alive = torch.ones(len(v), dtype=torch.bool, device=v.device)
        tokens, logps, masks = [], [], []
        for _ in range(max_len):
            logits, h = self._step(word, h)
            logp = logits.log_softmax(-1)
            word = logp.argmax(-1) if greedy else _multinomial(logp.detach().float().exp(), generator)
            masks.append(alive)
            tokens.append(torch.where(alive, word, torch.zeros_like(word)))
            logps.append(logp.gather(1, word[:, None])[:, 0])
            alive = alive & (word != EOS_ID)
            if not bool(alive.any()):
                break
        return torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(masks, 1)

    @torch.no_grad()
    def beam_search(self, v: torch.Tensor, beam: int = 3, max_len: int | None = None) -> list[list[int]]:
        """The highest-log-probability caption per row found by a beam of ``beam`` (ids without the end token).

        A finished hypothesis keeps its score; the search stops when every beam has ended or at
        ``max_len``. ``beam = 1`` is greedy decoding; a beam wider than the vocabulary is the
        vocabulary's size (each hypothesis has no more continuations than words: any wider beam
        finds the same caption).
        """
        if beam < 1:
            raise XmrError(f"beam must be >= 1, got {beam}")
        beam = min(beam, self.config.vocab_size)
        max_len = max_len or self.config.max_len
        results = []
        for row in v:
            h, word = self._start(row[None])
            beams: list[tuple[float, list[int], torch.Tensor, bool]] = [(0.0, [], h, False)]
            for _ in range(max_len):
                grown: list[tuple[float, list[int], torch.Tensor, bool]] = []
                for score, ids, hb, done in beams:
                    if done:
                        grown.append((score, ids, hb, True))
                        continue
                    prev = torch.tensor([ids[-1] if ids else EOS_ID], device=row.device)
                    logits, h2 = self._step(prev, hb)
                    top = logits.log_softmax(-1)[0].topk(beam)
                    for lp, w in zip(top.values.tolist(), top.indices.tolist()):
                        grown.append((score + lp, [*ids, w], h2, w == EOS_ID))
                beams = sorted(grown, key=lambda b: -b[0])[:beam]
                if all(b[3] for b in beams):
                    break
            best = beams[0][1]
            results.append([i for i in best if i != EOS_ID])
        return results


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One word per row drawn from ``probs`` (B, V) on their device; with a (CPU) ``generator``, drawn on the
    CPU from it and moved back, so a seeded draw is the same on every device. Shape: (B,)."""
    if generator is None or probs.device.type == "cpu":
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
    return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(probs.device)
