"""ssl_art.methods: pretraining methods as flat compositions of models and losses behind one contract.

``base`` defines :class:`~ssl_art.methods.base.PretrainMethod` and ``StepOutput``; ``simclr`` is the baseline and
``art_ssl`` the art-style method (Gram style branch, fusion, EMA-teacher distillation, soft positives). ``registry``
maps each method name to the ``from_config`` that builds it (and supplies the config's valid ``method`` names);
``load`` rebuilds a method from a checkpoint.
"""
