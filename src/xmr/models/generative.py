"""GXN's generative heads on the grounded branch: the caption decoder (i2t) and the image generator (t2i).

Their architectures are the run's :class:`~xmr.models.ModelConfig` (``captioner``,
``image_generator``), but a search never uses them, so :class:`~xmr.models.JointModel` does not
hold them: the generative objective component (:mod:`xmr.objectives.generative`) trains them, and
the best checkpoint keeps them beside the model (``best/generative/``: weights and their id; the
decoder's vocabulary as ``best/caption_vocab.json``), where ``xmr caption``, ``xmr imagine`` and
``xmr eval --captions`` load them (:func:`load_generative`). Checkpoints written before they moved
held their weights in the model's own file under ``captioner.`` / ``image_generator.``; those
load as they are.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from xmr.errors import XmrError
from xmr.models.captioner import CaptionDecoder, CaptionerConfig
from xmr.models.image_gan import GanConfig, ImageGenerator
from xmr.models.joint import ModelConfig
from xmr.text import Vocabulary
from xmr.utils.io import load_json_object, save_json
from xmr.utils.weights import WEIGHTS_FILE, load_weights, save_weights, saved_model_id

#: the sub-folder of a checkpoint that holds the generative heads
GENERATIVE_DIR = "generative"
#: the caption decoder's vocabulary, in the checkpoint folder
CAPTION_VOCAB_FILE = "caption_vocab.json"


class GenerativeHeads(nn.Module):
    """The caption decoder and / or the image generator a model config names (each None when it names none).

    Args:
        config: the run's model config (``captioner`` / ``image_generator``: their configs as dicts).
        caption_vocab: the decoder's vocabulary (required with a captioner).

    Weights are named ``captioner.*`` and ``image_generator.*``: the names they had inside the
    joint model, in checkpoints and ``last.pt`` files written before.
    """

    def __init__(self, config: ModelConfig, caption_vocab: Vocabulary | None = None) -> None:
        super().__init__()
        self.caption_vocab = caption_vocab
        self.captioner: CaptionDecoder | None = None  # GXN's RNN_Dec on v_l (Sec. 3.3)
        if config.captioner is not None:
            if caption_vocab is None:
                raise XmrError("a captioner needs its caption vocabulary")
            self.captioner = CaptionDecoder(CaptionerConfig(**config.captioner))  # type: ignore[arg-type]
            if len(caption_vocab) != self.captioner.config.vocab_size:
                raise XmrError("the caption vocabulary has {have} ids, the captioner {want}", have=len(caption_vocab),
                               want=self.captioner.config.vocab_size)
        self.image_generator: ImageGenerator | None = None  # GXN's G_i with conditioning augmentation on t_l
        if config.image_generator is not None:
            self.image_generator = ImageGenerator(GanConfig(**config.image_generator))  # type: ignore[arg-type]

    @property
    def parts(self) -> dict[str, nn.Module]:
        """The heads present, by name (``captioner``, ``image_generator``)."""
        return {name: m for name, m in (("captioner", self.captioner), ("image_generator", self.image_generator))
                if m is not None}

    def save(self, directory: str | Path) -> str:
        """Write the heads into the checkpoint folder ``directory`` (being written); returns their weights' id."""
        sub = Path(directory) / GENERATIVE_DIR
        sub.mkdir(exist_ok=True)
        model_id = save_weights(self, sub)
        save_json(sub / "model.json", {"model_id": model_id, "about": "GXN's generative heads beside the model"})
        if self.caption_vocab is not None:
            self.caption_vocab.save(Path(directory) / CAPTION_VOCAB_FILE)
        return model_id


def load_generative(directory: str | Path, config: ModelConfig) -> GenerativeHeads | None:
    """The generative heads a checkpoint keeps beside its model (None when its config names none).

    Args:
        directory: the checkpoint folder (a run's ``best/``).
        config: its model config (the loaded model's).

    Raises:
        XmrError: a missing vocabulary or weights, or weights that are not the ones saved.
    """
    if config.captioner is None and config.image_generator is None:
        return None
    directory = Path(directory)
    vocab = None
    if config.captioner is not None:
        if not (directory / CAPTION_VOCAB_FILE).is_file():
            raise XmrError("{path}: the captioner's vocabulary is missing", path=str(directory / CAPTION_VOCAB_FILE))
        vocab = Vocabulary.load(directory / CAPTION_VOCAB_FILE)
    heads = GenerativeHeads(config, vocab)
    sub = directory / GENERATIVE_DIR
    if (sub / WEIGHTS_FILE).is_file():
        meta = load_json_object(sub / "model.json", "xmr generative heads")
        load_weights(heads, sub, expect_id=saved_model_id(meta, sub / "model.json"))
    else:  # written before the heads moved: their weights are in the model's file (checked by load_model)
        path = directory / WEIGHTS_FILE
        try:
            state = load_file(str(path))
            heads.load_state_dict({k: v for k, v in state.items() if k.startswith(tuple(f"{n}." for n in heads.parts))})
        except Exception as e:  # safetensors' and torch's own error types
            raise XmrError("{path}: no generative heads to load ({reason})", path=str(path),
                           reason=str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return heads.eval()
