"""Similarity-weighted soft positives against an EMA teacher and a memory queue (SCE, Denize et al. 2023).

Plain InfoNCE treats every other painting as a pure negative, but two works of the same movement *should* be close.
Here the target over the candidates (the teacher embeddings of the batch, gathered across ranks, plus a FIFO queue
of past teacher embeddings) is ``normalise(lambda * onehot + (1 - lambda) * softmax(sim_teacher / tau_t))``, where
``sim_teacher`` is the teacher's own similarity of the positive key to every candidate with the key itself masked
out, and the loss is the cross entropy of the student's ``softmax(sim / tau)`` against it. With ``lambda = 1`` it is
exactly InfoNCE of the student against the teacher keys (MoCo). The queue and its pointer are registered buffers, so
they are checkpointed and a resumed run continues with the same negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_art import distributed
from ssl_art.losses.pairs import cross_view_pairs

__all__ = ["SoftPositiveLoss", "soft_targets"]


def soft_targets(teacher_logits: Tensor, pos_index: Tensor, lambda_: float) -> Tensor:
    """``normalise(lambda * onehot(pos) + (1 - lambda) * softmax(teacher_logits with pos masked))``.

    Args:
        teacher_logits: ``(B, N)`` teacher similarities already divided by ``tau_t``.
        pos_index: ``(B,)`` column of each row's positive.
        lambda_: weight of the hard positive in ``[0, 1]``.

    Returns:
        ``(B, N)`` rows that sum to 1.
    """
    onehot = F.one_hot(pos_index, teacher_logits.shape[1]).to(teacher_logits.dtype)
    if lambda_ >= 1.0:
        return onehot
    masked = teacher_logits.masked_fill(onehot.bool(), float("-inf"))
    target = lambda_ * onehot + (1.0 - lambda_) * masked.softmax(dim=1)
    return target / target.sum(dim=1, keepdim=True)


class SoftPositiveLoss(nn.Module):
    """Cross entropy of the student's similarity softmax against teacher-derived soft positive targets.

    Args:
        lambda_: weight of the hard positive in the target, in ``[0, 1]`` (1 = InfoNCE against the teacher).
        tau: student temperature, > 0.
        tau_t: teacher temperature for the soft part, > 0 (sharper than ``tau`` in SCE).
        queue_size: teacher embeddings kept from past steps (0 = batch candidates only).
        dim: embedding width ``D``.
        gather_distributed: use every rank's teacher keys as candidates (no-op in a single process).

    Raises:
        ValueError: an argument outside its valid range.
    """

    queue: Tensor
    queue_ptr: Tensor
    queue_len: Tensor

    def __init__(
        self,
        lambda_: float = 0.5,
        tau: float = 0.1,
        tau_t: float = 0.05,
        queue_size: int = 4096,
        dim: int = 128,
        gather_distributed: bool = True,
    ):
        super().__init__()
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
        if not (tau > 0 and tau_t > 0):
            raise ValueError(f"tau and tau_t must be > 0, got {tau}, {tau_t}")
        if queue_size < 0 or dim < 1:
            raise ValueError(f"queue_size must be >= 0 and dim >= 1, got {queue_size}, {dim}")
        self.lambda_ = lambda_
        self.tau = tau
        self.tau_t = tau_t
        self.queue_size = queue_size
        self.gather_distributed = gather_distributed
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next row to overwrite
        self.register_buffer("queue_len", torch.zeros((), dtype=torch.long))  # rows filled so far (<= queue_size)

    def _gather(self, x: Tensor) -> Tensor:
        return distributed.gather_cat(x) if self.gather_distributed else x

    def pair_loss(self, student: Tensor, teacher: Tensor, queue: Tensor) -> Tensor:
        """Loss of one (student view, teacher view of the same images) pair.

        Args:
            student: ``(B, D)`` student embeddings (need not be normalised).
            teacher: ``(B, D)`` teacher embeddings of the other view (detached here).
            queue: ``(K, D)`` L2-normalised past teacher embeddings.

        Returns:
            Scalar: mean over this rank's ``B`` rows.
        """
        with torch.autocast(device_type=student.device.type, enabled=False):  # tau_t = 0.05 amplifies bf16 error
            return self._pair_loss_fp32(student.float(), teacher.detach().float(), queue.float())

    def _pair_loss_fp32(self, student: Tensor, teacher: Tensor, queue: Tensor) -> Tensor:
        s = F.normalize(student, dim=1)
        t = F.normalize(teacher, dim=1)
        t_all = self._gather(t)
        cands = torch.cat([t_all, queue], dim=0)  # (N, D), N = world * B + K
        if cands.shape[0] < 2:
            raise ValueError("soft positives need at least one candidate besides the positive (batch >= 2 or a queue)")
        b = s.shape[0]
        offset = distributed.rank() * b if (self.gather_distributed and distributed.world_size() > 1) else 0
        pos = torch.arange(b, device=s.device) + offset
        with torch.no_grad():
            target = soft_targets(t @ cands.T / self.tau_t, pos, self.lambda_)
        logits = s @ cands.T / self.tau
        return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()

    def forward(
        self,
        student: Sequence[Tensor],
        teacher: Sequence[Tensor],
        teacher_views: Sequence[int] | None = None,
        update_queue: bool = True,
    ) -> Tensor:
        """Average of :meth:`pair_loss` over (student view ``i``, teacher entry of another view); then ``teacher[0]``
        is enqueued.

        Args:
            student: ``student[i]`` is the ``(B, D)`` student embedding of view ``i``.
            teacher: ``(B, D)`` teacher embeddings of the views named by ``teacher_views``.
            teacher_views: view index of each ``teacher`` entry (default ``0, 1, ...``: one per view).
            update_queue: push the (gathered) ``teacher[0]`` into the queue after the loss.

        Returns:
            Scalar loss.

        Raises:
            ValueError: fewer than 2 student views or no cross-view pair.
        """
        pairs = cross_view_pairs(len(student), len(teacher), teacher_views)
        queue = self.queue[: int(self.queue_len)].clone()  # snapshot: every pair sees the same negatives
        loss = torch.stack([self.pair_loss(student[i], teacher[k], queue) for i, k in pairs]).mean()
        if update_queue:
            self.enqueue(teacher[0])
        return loss

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Push L2-normalised ``(B, D)`` keys (gathered across ranks, rank order) into the FIFO ring buffer."""
        if self.queue_size == 0:
            return
        k = self._gather(F.normalize(keys.detach().float(), dim=1))
        if k.shape[0] >= self.queue_size:
            k = k[-self.queue_size :]
        n = k.shape[0]
        ptr = int(self.queue_ptr)
        end = ptr + n
        if end <= self.queue_size:
            self.queue[ptr:end] = k.to(self.queue.dtype)
        else:
            first = self.queue_size - ptr
            self.queue[ptr:] = k[:first].to(self.queue.dtype)
            self.queue[: n - first] = k[first:].to(self.queue.dtype)
        self.queue_ptr.fill_(end % self.queue_size)
        self.queue_len.fill_(min(self.queue_size, int(self.queue_len) + n))
