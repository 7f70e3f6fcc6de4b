"""Monocular 3D face reconstruction with a learned perceptual shape loss (Otto et al., PG 2023)."""
from regressor.types import FaceBatch, FaceMesh, FaceParams, Fragments, LossInputs, Renders

__all__ = ["FaceBatch", "FaceMesh", "FaceParams", "Fragments", "LossInputs", "Renders"]
__version__ = "0.1.0"
