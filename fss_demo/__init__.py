"""fss-demo: few-shot semantic segmentation with ConvLSTM support fusion, after A-MCG (Hu et al., AAAI 2019)."""
from .hub import load_model
from .images import MAX_SUPPORTS
from .model import FewShotSegmenter, ModelConfig, Segmentation

__all__ = ["MAX_SUPPORTS", "FewShotSegmenter", "ModelConfig", "Segmentation", "load_model"]
