"""ssl_art.losses: typed loss modules that take tensors (no config, no data), plus the embedding collapse signal."""

from ssl_art.losses.collapse import embedding_std
from ssl_art.losses.contrastive import InfoNCE
from ssl_art.losses.distill import DistillLoss
from ssl_art.losses.soft_positive import SoftPositiveLoss, soft_targets

__all__ = ["DistillLoss", "InfoNCE", "SoftPositiveLoss", "embedding_std", "soft_targets"]
