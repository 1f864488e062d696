"""Fine-tuning on small labelled collections and the SHMNet-style gated two-branch head.

Importing the package registers the valid values of the ``ft.*`` string options with the config loader, so a typo
such as ``ft.mode=lineal`` fails on load with the list of choices.
"""

from ssl_art.config import register_choices

register_choices("ft.mode", ("linear", "last_n", "full"))
register_choices("ft.imbalance", ("none", "weighted_loss", "balanced_sampler"))
register_choices("ft.select_metric", ("top1", "balanced_acc", "macro_f1"))
register_choices("ft.ensemble_weighting", ("val", "uniform"))
register_choices("gate.calibration", ("shmnet", "selector", "confidence", "best"))
