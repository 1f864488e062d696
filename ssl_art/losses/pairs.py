"""Cross-view pairing shared by the teacher-student losses: each student view meets every teacher view but its own.

Both :class:`~ssl_art.losses.distill.DistillLoss` and :class:`~ssl_art.losses.soft_positive.SoftPositiveLoss`
compare a student view with the teacher's embedding of a *different* augmentation of the same images; the teacher
may encode only some views per step (``loss.teacher_views=alternate``), so the pairs are built from the view index of
each teacher output rather than assumed.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cross_view_pairs"]


def cross_view_pairs(n_student: int, n_teacher: int, teacher_views: Sequence[int] | None) -> list[tuple[int, int]]:
    """Every ``(student view i, teacher entry k)`` whose teacher view ``teacher_views[k]`` differs from ``i``.

    Args:
        n_student: number of student views.
        n_teacher: number of teacher outputs.
        teacher_views: the view index of each teacher output (default ``0, 1, ...``: one per view).

    Returns:
        The ``(i, k)`` pairs, student view major.

    Raises:
        ValueError: fewer than 2 student views, a view index count that differs from ``n_teacher``, or no pair.
    """
    views = list(range(n_teacher)) if teacher_views is None else list(teacher_views)
    if n_student < 2 or len(views) != n_teacher:
        raise ValueError(f"need >= 2 student views and a view index per teacher output, got {n_student}, {views}")
    pairs = [(i, k) for i in range(n_student) for k, j in enumerate(views) if i != j]
    if not pairs:
        raise ValueError(f"no (student view, other teacher view) pair: student views {n_student}, teacher {views}")
    return pairs
