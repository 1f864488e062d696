"""ssl_art.explain: why a classifier decided what it did (Grad-CAM heatmaps of fine-tuned classifiers).

It explains models, so it imports models and data only; the ``ssl-art plot gradcam`` command loads the fine-tuned
checkpoint and hands the classifier in.
"""
