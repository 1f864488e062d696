"""ssl_art.losses: typed loss modules that take tensors (no config, no data)."""

from ssl_art.losses.contrastive import GramContrastiveLoss, InfoNCE
from ssl_art.losses.distill import DistillLoss
from ssl_art.losses.soft_positive import SoftPositiveLoss, soft_targets

__all__ = ["DistillLoss", "GramContrastiveLoss", "InfoNCE", "SoftPositiveLoss", "soft_targets"]
