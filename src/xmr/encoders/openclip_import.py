"""Importing open_clip where torchvision is missing.

``import open_clip`` imports torchvision for two things xmr never calls: its training and eval
transforms (``open_clip.transform``; xmr's are :mod:`xmr.encoders.openclip_pixels`) and
``FrozenBatchNorm2d`` (``open_clip.utils.freeze_batch_norm_2d``, which freezes ResNet towers for
training). When torchvision is not installed (pip wheels of it are built against one torch each,
so a CPU-only torch often has none that matches), :func:`import_open_clip` imports open_clip with
inert stand-ins for the names it takes from torchvision, in ``sys.modules`` only while it imports;
calling one of them raises. Where torchvision is installed, open_clip imports it as usual.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

from xmr.errors import XmrError

_LOCK = threading.Lock()
_NAMES = {"torchvision.transforms": ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop",
                                     "ColorJitter", "Grayscale"),
          "torchvision.ops.misc": ("FrozenBatchNorm2d",)}


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _inert(name: str) -> type:
    def refuse(*args: object, **kwargs: object) -> None:
        raise XmrError(f"open_clip's {name} needs torchvision, which is not installed (xmr does not call it)")

    return type(name, (), {"__init__": refuse})


def _stand_ins() -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms",
                                                      "torchvision.transforms.functional", "torchvision.ops",
                                                      "torchvision.ops.misc")}
    for module, names in _NAMES.items():
        for name in names:
            setattr(mods[module], name, _inert(name))
    mods["torchvision.transforms"].InterpolationMode = _InterpolationMode  # type: ignore[attr-defined]  # a stand-in
    for name, mod in mods.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(mods[parent], child, mod)
    return mods


def _torchvision_missing() -> bool:
    try:
        importlib.import_module("torchvision")
    except ModuleNotFoundError as e:
        return e.name is not None and e.name.split(".")[0] == "torchvision"
    except Exception:  # installed but broken (a build for another torch): open_clip's import then fails in one line
        return False
    return False


def import_open_clip() -> Any:
    """The ``open_clip`` module; a missing package (or one that fails to import) is a one-line XmrError."""
    with _LOCK:
        if "open_clip" in sys.modules:
            return sys.modules["open_clip"]
        if importlib.util.find_spec("open_clip") is None:
            raise XmrError("open-clip encoders need the open_clip_torch package (pip install open-clip-torch)")
        stand_ins = _torchvision_missing()
        if stand_ins:
            try:  # transformers asks whether torchvision is installed when it is first imported: before the stand-ins
                importlib.import_module("transformers")
            except ImportError:
                pass
            sys.modules.update(_stand_ins())
        try:
            return importlib.import_module("open_clip")
        except Exception as e:
            for name in [n for n in sys.modules if n == "open_clip" or n.startswith("open_clip.")]:
                del sys.modules[name]
            raise XmrError(f"cannot import open_clip ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
        finally:
            if stand_ins:
                for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                    del sys.modules[name]
