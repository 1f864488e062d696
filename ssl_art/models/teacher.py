"""EMA teacher: a frozen deep copy of a student that moves only through :meth:`EMATeacher.update`.

The momentum-encoder idea of MoCo/BYOL/DINO: ``theta_t <- m * theta_t + (1 - m) * theta_s`` after every optimiser
step, with ``m`` supplied by the caller (a schedule of training progress, never computed in here). Teacher
parameters have ``requires_grad=False`` and every forward runs under ``torch.no_grad``, so no gradient can reach them
and an optimiser built from ``requires_grad`` parameters never sees them. Buffers (BatchNorm running statistics and
counters) are *copied* from the student, not averaged: averaging an integer ``num_batches_tracked`` is meaningless
and copied running statistics match the student's current feature scale (a documented choice; timm's ``ModelEma``
averages them instead). The teacher lives as a sub-module, so it is
in the owning method's ``state_dict`` and survives a resume.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EMATeacher"]


class EMATeacher(nn.Module):
    """Frozen exponential-moving-average copy of ``student``.

    Args:
        student: the module to copy (its current weights become the teacher's initial weights).
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(student)
        for p in self.module.parameters():
            p.requires_grad_(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the copy under ``torch.no_grad`` (outputs never carry gradients)."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """``theta_t <- momentum * theta_t + (1 - momentum) * theta_s`` for parameters; buffers copied.

        Args:
            student: module with the same structure as the teacher's copy.
            momentum: in ``[0, 1]``; 1 keeps the teacher fixed, 0 copies the student.

        Raises:
            ValueError: momentum outside ``[0, 1]`` or a student whose parameters do not match.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        t_params = dict(self.module.named_parameters())
        s_params = dict(student.named_parameters())
        if t_params.keys() != s_params.keys():
            raise ValueError("student parameters do not match the teacher's (was the student rebuilt?)")
        names = list(t_params)
        t_list: list[Tensor] = [t_params[n] for n in names]
        s_list: list[Tensor] = [s_params[n].detach().to(t_params[n].dtype) for n in names]
        if momentum == 0.0:
            torch._foreach_copy_(t_list, s_list)
        elif momentum < 1.0:
            # lerp(t, s, 1 - m) = m * t + (1 - m) * s, one fused kernel per dtype/device group
            torch._foreach_lerp_(t_list, s_list, 1.0 - momentum)
        s_bufs = dict(student.named_buffers())
        for n, b in self.module.named_buffers():
            if n in s_bufs:
                b.copy_(s_bufs[n])
