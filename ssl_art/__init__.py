"""ssl_art: self-supervised representation learning for art style (pretrain, evaluate, fine-tune, retrieve)."""

__version__ = "0.1.0"
