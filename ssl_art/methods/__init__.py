"""ssl_art.methods: pretraining methods as flat compositions of models and losses behind one contract.

``base`` defines :class:`~ssl_art.methods.base.PretrainMethod` and ``StepOutput``; ``simclr`` is the baseline and
``art_ssl`` the art-style method (Gram style branch, fusion, EMA-teacher distillation, soft positives).
"""
