"""ssl_art.eval: frozen-feature evaluation of a pretrained method (imports models and data, never the engine loop).

``features`` embeds a collection, ``knn`` runs the weighted-vote kNN (FAISS with a torch fallback), ``linear`` the
linear probe, ``metrics`` top-k / mAP / recall@k, ``crossval`` the stratified k-fold protocol and ``run`` the whole
``main_linear.py`` evaluation.
"""
