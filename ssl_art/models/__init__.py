"""ssl_art.models: the network parts (timm backbone, Gram style head, fusion, heads, EMA teacher, gated head).

Modules take tensors or typed dataclasses, never config objects; ``build`` is the one place a config becomes
constructor keyword arguments, and rebuilds a method from a checkpoint (via :mod:`ssl_art.checkpoint`).
"""
