"""fss-demo: few-shot semantic segmentation with ConvLSTM support fusion, after A-MCG (Hu et al., AAAI 2019)."""
from .hub import load_model
from .model import FewShotSegmenter, Segmentation

__all__ = ["FewShotSegmenter", "Segmentation", "load_model"]
