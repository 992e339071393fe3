"""Instance loss with one shared classifier, and its two-stage schedule (the dual-path paper).

Zheng et al., "Dual-Path Convolutional Image-Text Embeddings with Instance Loss" (TOMM 2020),
Sec. IV-B. Every image/text group (an image and its sentences) is its own class; one linear
classifier ``W_share`` (n_classes, d), shared by both modalities, classifies image features and
text features into those classes:

    P_visual  = softmax(W_share^T f_img),   L_visual  = -log P_visual(c)     (Eqs. 5-6)
    P_textual = softmax(W_share^T f_text),  L_textual = -log P_textual(c)    (Eqs. 7-8)

Sharing the weights is the point: "otherwise the learned image and text features may exist in
totally different subspaces". The equations have no bias term, so :class:`SharedClassifier`
(xmr.models) has none by default. The model owns ``W_share``; the loss takes it as an argument
and stays a pure function.

The full objective (Eq. 9) is ``L = lam1 L_rank + lam2 L_visual + lam3 L_textual``, trained in two
stages (Sec. V), which :class:`TwoStageSchedule` describes for the trainer.

Example::

    >>> import torch, torch.nn.functional as F
    >>> img = F.normalize(torch.randn(6, 16), dim=-1); txt = F.normalize(torch.randn(6, 16), dim=-1)
    >>> w = torch.randn(10, 16); labels = torch.tensor([0, 1, 2, 3, 4, 5])
    >>> sorted(instance_loss(img, txt, labels, w))
    ['acc_img', 'acc_txt', 'loss', 'loss_img', 'loss_txt']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from xmr.errors import XmrError


def _check_branch(name: str, emb: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> None:
    if emb.ndim != 2 or emb.shape[1] != weight.shape[1]:
        raise XmrError(f"{name} embeddings must be (B, {weight.shape[1]}) to match W_share, got {tuple(emb.shape)}")
    if labels.shape != (emb.shape[0],):
        raise XmrError(f"{name} labels must have shape ({emb.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= weight.shape[0]):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise XmrError(f"{name} label {bad} is outside [0, {weight.shape[0]}) (the classifier's classes)")


def instance_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, *,
                  txt_labels: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                  label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Softmax classification of images and texts into their groups by one shared W (Eqs. 5-8).

    Args:
        img: image features f_img. Shape: (B, d).
        txt: text features f_text. Shape: (B_t, d).
        labels: group (instance) index of each image, and of each text unless ``txt_labels``
            is given. Shape: (B,), integer in [0, n_classes).
        weight: W_share, one row per group. Shape: (n_classes, d).
        txt_labels: group index of each text when texts are not row-aligned with images.
            Shape: (B_t,).
        bias: optional class bias (not in the paper). Shape: (n_classes,).
        label_smoothing: as in :func:`torch.nn.functional.cross_entropy` (paper: 0).

    Returns:
        ``{"loss", "loss_img", "loss_txt", "acc_img", "acc_txt"}``: ``loss = loss_img + loss_txt``
        (Eq. 9 with lam2 = lam3 = 1; weight the parts yourself for other values), the mean
        cross-entropies L_visual and L_textual, and the batch top-1 accuracies (detached).

    Raises:
        XmrError: mismatched shapes, a label outside the classifier's classes, or a
            ``label_smoothing`` outside [0, 1).
    """
    if weight.ndim != 2:
        raise XmrError(f"W_share must be (n_classes, d), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise XmrError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise XmrError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    txt_labels = labels if txt_labels is None else txt_labels
    _check_branch("image", img, labels, weight)
    _check_branch("text", txt, txt_labels, weight)
    logits_img = F.linear(img, weight, bias)  # = img @ W_share^T: the same W for both branches
    logits_txt = F.linear(txt, weight, bias)
    loss_img = F.cross_entropy(logits_img, labels, label_smoothing=label_smoothing)
    loss_txt = F.cross_entropy(logits_txt, txt_labels, label_smoothing=label_smoothing)
    acc_img = (logits_img.argmax(dim=1) == labels).float().mean().detach()
    acc_txt = (logits_txt.argmax(dim=1) == txt_labels).float().mean().detach()
    return {"loss": loss_img + loss_txt, "loss_img": loss_img, "loss_txt": loss_txt,
            "acc_img": acc_img, "acc_txt": acc_txt}


class StageWeights(NamedTuple):
    """The Eq. 9 weights of one epoch and whether the pretrained image side is frozen."""

    lambda_rank: float
    lambda_img: float
    lambda_txt: float
    freeze_image: bool


@dataclass(frozen=True)
class TwoStageSchedule:
    """The dual-path paper's two training stages (Sec. V), as Eq. 9 weights per epoch.

    * Stage I (epochs ``0 .. stage1_epochs - 1``): instance loss only, ``lam1 = 0``,
      ``lam2 = lam3 = 1``; the pretrained image CNN is fixed ("the text CNN may compromise the
      pre-trained image CNN"). Only the image *backbone* is frozen: the paper still tunes the
      image side's fully connected layers and batch norm above it, and W_share.
    * Stage II (every later epoch): ``lam1 = lam2 = lam3 = 1``, the entire network fine-tuned.

    The paper switches when Stage I "converges"; here the switch is a fixed epoch the caller
    picks (``stage1_epochs = 0`` trains Stage II throughout). The paper's Stage II ranking loss
    used margin 1 (Sec. VI-B); the margin is the ranking loss's argument, not part of this.

    Example::

        >>> TwoStageSchedule(stage1_epochs=2).weights(0)
        StageWeights(lambda_rank=0.0, lambda_img=1.0, lambda_txt=1.0, freeze_image=True)
        >>> TwoStageSchedule(stage1_epochs=2).weights(2).freeze_image
        False
    """

    stage1_epochs: int
    stage1: tuple[float, float, float] = (0.0, 1.0, 1.0)
    stage2: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if isinstance(self.stage1_epochs, bool) or not isinstance(self.stage1_epochs, int) or self.stage1_epochs < 0:
            raise XmrError(f"stage1_epochs must be an int >= 0, got {self.stage1_epochs!r}")
        for name in ("stage1", "stage2"):
            lams = getattr(self, name)
            if len(lams) != 3 or any(float(x) < 0 for x in lams):
                raise XmrError(f"{name} must be three weights >= 0 (lam1, lam2, lam3), got {lams!r}")

    def stage(self, epoch: int) -> int:
        """1 or 2: the stage that 0-based ``epoch`` belongs to."""
        if epoch < 0:
            raise XmrError(f"epoch must be >= 0, got {epoch}")
        return 1 if epoch < self.stage1_epochs else 2

    def weights(self, epoch: int) -> StageWeights:
        """``(lambda_rank, lambda_img, lambda_txt, freeze_image)`` for 0-based ``epoch``."""
        stage = self.stage(epoch)
        lam1, lam2, lam3 = self.stage1 if stage == 1 else self.stage2
        return StageWeights(float(lam1), float(lam2), float(lam3), stage == 1)
