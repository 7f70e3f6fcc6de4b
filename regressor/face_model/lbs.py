"""Linear blend skinning in FLAME's formulation (batch-first, differentiable, any device).

Hand-written because it is ~60 lines and the maintained packages (smplx) pull in their own
model loading; the maths follows the SMPL/FLAME papers.
"""
from __future__ import annotations

import torch
from torch import Tensor


def axis_angle_to_matrix(rot_vecs: Tensor) -> Tensor:
    """Rodrigues' formula: (N, 3) axis-angle -> (N, 3, 3); smooth at zero angle."""
    angle = torch.sqrt((rot_vecs * rot_vecs).sum(-1, keepdim=True) + 1e-16)  # (N, 1)
    axis = rot_vecs / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zeros = torch.zeros_like(x)
    k = torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)
    return eye + sin * k + (1 - cos) * (k @ k)


def rigid_transforms(rot_mats: Tensor, joints: Tensor, parents: list[int]) -> tuple[Tensor, Tensor]:
    """Compose the kinematic chain.

    Args:
        rot_mats: (B, J, 3, 3) local rotations.
        joints: (B, J, 3) rest joint positions.
        parents: J parent indices, -1 for the root; parents precede children.
    Returns:
        posed joints (B, J, 3) and (B, J, 4, 4) transforms mapping rest-pose points to posed ones.
    """
    batch, n_joints = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.cat([rot_mats, rel[..., None]], -1)  # (B, J, 3, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=joints.dtype, device=joints.device).expand(batch, n_joints, 1, 4)
    local = torch.cat([local, bottom], -2)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for j in range(1, n_joints):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, 1)
    posed_joints = world[:, :, :3, 3]
    # Remove the rest-pose joint offset so the transform acts on rest-pose coordinates.
    offset = (world[:, :, :3, :3] @ joints[..., None])[..., 0]
    world = torch.cat([world[:, :, :, :3], (world[:, :, :, 3] - torch.cat([offset, torch.zeros_like(offset[..., :1])], -1))[..., None]], -1)
    return posed_joints, world


def blend_skinning(
    v_shaped: Tensor, pose: Tensor, posedirs: Tensor, j_regressor: Tensor, weights: Tensor, parents: list[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Pose a batch of shaped meshes.

    Args:
        v_shaped: (B, V, 3) template + identity/expression offsets.
        pose: (B, J*3) axis-angle per joint.
        posedirs: (36, V*3) pose-corrective basis over the non-root ``R - I`` features.
        j_regressor: (J, V); weights: (V, J).
    Returns:
        vertices (B, V, 3), posed joints (B, J, 3), local rotations (B, J, 3, 3).
    """
    batch, n_vertices = v_shaped.shape[:2]
    n_joints = weights.shape[1]
    joints = torch.einsum("jv,bvc->bjc", j_regressor, v_shaped)
    rot_mats = axis_angle_to_matrix(pose.reshape(-1, 3)).view(batch, n_joints, 3, 3)
    eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
    pose_feature = (rot_mats[:, 1:] - eye).reshape(batch, -1)
    v_posed = v_shaped + (pose_feature @ posedirs).view(batch, n_vertices, 3)
    posed_joints, transforms = rigid_transforms(rot_mats, joints, parents)
    per_vertex = torch.einsum("vj,bjrc->bvrc", weights, transforms)  # (B, V, 4, 4)
    vertices = (per_vertex[..., :3, :3] @ v_posed[..., None])[..., 0] + per_vertex[..., :3, 3]
    return vertices, posed_joints, rot_mats
