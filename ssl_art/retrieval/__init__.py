"""ssl_art.retrieval: nearest-style search and collection analysis.

``embed`` (collection -> resumable float16/32 memmap + manifest + meta with the model hash), ``index`` (FAISS index
chosen by size, saved with its manifest; refuses another model), ``query`` (images -> top-k works, table/JSON),
``evaluate`` (leave-one-out mAP/recall/precision@k by label, approximate-vs-exact recall), ``analysis`` (atypical
works, likely mislabels, near duplicates), ``plots`` (UMAP/t-SNE map, query grids), ``synthetic`` (clustered test
vectors). The ``ssl-art`` command line (:mod:`ssl_art.cli`) wraps them all; retrieval never imports it.
"""
