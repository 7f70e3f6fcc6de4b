"""Differentiable rendering: cameras -> ``rasterize`` (torch | pytorch3d backend) -> shading -> ``Renders``."""
from regressor.render.camera import project_weak_perspective
from regressor.render.rasterize import rasterize
from regressor.render.renderer import DEFAULT_LIGHT_DIRECTION, Renderer, mesh_for_rendering

__all__ = ["DEFAULT_LIGHT_DIRECTION", "Renderer", "mesh_for_rendering", "project_weak_perspective", "rasterize"]
