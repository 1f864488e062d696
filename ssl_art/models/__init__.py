"""ssl_art.models: the network parts (timm backbone, Gram style head, fusion, heads, EMA teacher, gated head).

Modules take tensors or typed dataclasses, never config objects; ``build`` is the one place ``model.*`` becomes
backbone keyword arguments, and loads state dicts strictly. Models know no method: pretraining methods are composed
from these parts in :mod:`ssl_art.methods`.
"""
