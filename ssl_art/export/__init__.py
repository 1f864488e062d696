"""Take a trained backbone to other tools: timm/safetensors weights with a model card, or an ONNX embedder.

``export_timm(run, out)`` writes the backbone alone (no projection heads, no key prefixes) as ``model.safetensors``
plus timm's ``config.json`` (``pretrained_cfg``) and a ``README.md`` model card; ``export_onnx(run, out, kind)``
writes the method's embedder (``pooled``, ``fused`` or ``gram``) as ``embedder.onnx`` with a dynamic batch axis.
Both read a pretraining run folder or checkpoint with :func:`ssl_art.models.build.load_method`.
"""

from ssl_art.export.onnx_graph import export_onnx
from ssl_art.export.timm_weights import export_timm, load_run

__all__ = ["export_onnx", "export_timm", "load_run"]
