"""Loading models (`load_model`) and finding their anatomy (`discover_layers`)."""

from layerwise.models.arch import ARCHITECTURES, LayerMap, discover_layers
from layerwise.models.loading import LoadedModel, load_model
from layerwise.models.tiny import TINY_FAMILIES

__all__ = ["ARCHITECTURES", "TINY_FAMILIES", "LayerMap", "LoadedModel", "discover_layers", "load_model"]
