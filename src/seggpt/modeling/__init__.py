"""Pure torch modules: the SegGPT encoder, decoder and their layers. Imports nothing outside torch."""

from seggpt.modeling.seggpt import INSTANCE, SEMANTIC, SegGPT

__all__ = ["SegGPT", "SEMANTIC", "INSTANCE"]
