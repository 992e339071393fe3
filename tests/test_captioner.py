"""GXN's caption decoder (RNN_Dec): ids, teacher forcing with scheduled sampling, sampling, greedy, beam."""

from __future__ import annotations

import pytest
import torch

from xmr.errors import XmrError
from xmr.losses.generative import caption_xe_loss
from xmr.models.captioner import EOS_ID, CaptionDecoder, CaptionerConfig, caption_ids, caption_vocabulary, decode_ids

TEXTS = ["a red circle on the left", "a blue square in the centre", "a small green triangle", "a big red block"]


def _decoder(vocab_size: int, seed: int = 0, dropout: float = 0.0) -> CaptionDecoder:
    torch.manual_seed(seed)
    return CaptionDecoder(CaptionerConfig(vocab_size=vocab_size, in_dim=8, word_dim=16, hidden_dim=32, max_len=10,
                                          dropout=dropout))


def test_ids_round_trip_with_the_end_token() -> None:
    vocab = caption_vocabulary(TEXTS)
    assert vocab.words[EOS_ID] == "<eos>"
    ids = caption_ids(vocab, TEXTS, max_len=10)
    assert ids.shape == (4, 10) and all(int(row[(row != 0).sum() - 1]) == EOS_ID for row in ids)
    assert [decode_ids(vocab, row.tolist()) for row in ids] == TEXTS
    cut = caption_ids(vocab, TEXTS, max_len=3)
    assert decode_ids(vocab, cut[0].tolist()) == "a red" and int(cut[0, 2]) == EOS_ID
    assert decode_ids(vocab, [vocab.id("red"), 1, EOS_ID, vocab.id("blue")]) == "red <unk>"


def test_teacher_forcing_equals_stepping_and_scheduled_sampling_changes_inputs() -> None:
    vocab = caption_vocabulary(TEXTS)
    dec = _decoder(len(vocab)).eval()
    v, targets = torch.randn(4, 8), caption_ids(vocab, TEXTS, 10)
    logits = dec(v, targets)
    h, word = dec._start(v)
    for t in range(targets.shape[1]):  # step by step, the ground-truth word as each next input
        step, h = dec._step(word, h)
        torch.testing.assert_close(logits[:, t], step)
        word = targets[:, t]
    torch.testing.assert_close(dec(v, targets, ss_prob=0.0), logits)
    own = dec(v, targets, ss_prob=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(own[:, 0], logits[:, 0])  # the first step reads the start token either way
    assert not torch.allclose(own[:, 1:], logits[:, 1:])


def test_greedy_sampling_beam_and_learning_four_captions() -> None:
    vocab = caption_vocabulary(TEXTS)
    dec = _decoder(len(vocab), seed=1)
    v, targets = torch.randn(4, 8), caption_ids(vocab, TEXTS, 10)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    for _ in range(150):  # XE (Eq. 4) on four fixed (feature, caption) pairs
        opt.zero_grad()
        caption_xe_loss(dec(v, targets), targets, targets != 0).backward()
        opt.step()
    dec.eval()
    with torch.no_grad():
        greedy, logp, mask = dec.sample(v, greedy=True)
    assert [decode_ids(vocab, row) for row in greedy.tolist()] == TEXTS
    assert [decode_ids(vocab, ids) for ids in dec.beam_search(v, beam=3)] == TEXTS
    assert dec.beam_search(v, beam=1) == [[i for i in row if i not in (0, EOS_ID)] for row in greedy.tolist()]
    assert bool((mask.sum(1) == (targets != 0).sum(1)).all())  # each decode stops at its end token
    torch.manual_seed(0)
    sampled, slogp, smask = dec.sample(v, greedy=False)
    assert bool((slogp[smask] <= 0).all()) and bool((sampled[~smask] == 0).all())


def test_beam_search_scores_at_least_the_greedy_decode() -> None:
    vocab = caption_vocabulary(TEXTS)
    dec = _decoder(len(vocab), seed=2).eval()
    v = torch.randn(6, 8)

    def seq_logp(row: torch.Tensor, ids: list[int]) -> float:
        seq = torch.tensor([[*ids, EOS_ID]])[:, : dec.config.max_len]
        return float(torch.log_softmax(dec(row[None], seq), -1).gather(-1, seq[..., None]).sum())

    with torch.no_grad():
        greedy, _, _ = dec.sample(v, greedy=True)
        for row, g, b in zip(v, greedy.tolist(), dec.beam_search(v, beam=4)):
            g_ids = [i for i in g if i not in (0, EOS_ID)]
            assert seq_logp(row, b) >= seq_logp(row, g_ids) - 1e-5
    with pytest.raises(XmrError, match="beam"):
        dec.beam_search(v, beam=0)
