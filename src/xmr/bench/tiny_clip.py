"""A small randomly initialised CLIP checkpoint written to disk, for benchmarks on ``hf-clip:PATH``.

No weights are downloaded: the model is ``transformers.CLIPModel`` with a seeded random
initialisation, a word-level tokenizer over the words of the given texts (lower-cased, split on
whitespace and punctuation), and a CLIP image processor at the model's image size.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def make_tiny_clip(folder: Path, texts: Iterable[str], *, hidden: int = 64, layers: int = 2, heads: int = 4,
                   image_size: int = 64, patch: int = 16, max_tokens: int = 16, projection: int = 64,
                   seed: int = 0) -> Path:
    """Write a random CLIP (``layers`` per tower, ``hidden`` wide) with its tokenizer and processor into
    ``folder`` (replaced when there) and return it; ``hf-clip:<folder>`` then names it."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    pre = pre_tokenizers.Whitespace()
    words = sorted({w.lower() for t in texts for w, _ in pre.pre_tokenize_str(t)})
    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {w: i for i, w in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2),
                                                                                                ("[EOS]", 3)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                bos_token="[BOS]", eos_token="[EOS]", model_max_length=max_tokens)
    common = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads)
    text = dict(common, vocab_size=len(vocab), max_position_embeddings=max_tokens, pad_token_id=0, bos_token_id=2,
                eos_token_id=3)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=text, vision_config=dict(common, image_size=image_size, patch_size=patch),
        projection_dim=projection)).eval()
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": image_size},
                                    crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
