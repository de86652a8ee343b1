"""Sanity baselines: `identity` returns the source unchanged, `blank` a uniform grey image. They need no
model, so a run with them costs only judge time; a judge that scores them like a real editor is not to be
trusted. They run as editors of their own, or beside any editor (`baselines`)."""

from __future__ import annotations

import logging

from PIL import Image

from ..backends import Editor, EditResult, register_baseline, register_editor

logger = logging.getLogger(__name__)


class Baseline(Editor):
    needs_model = False

    @classmethod
    def display_name(cls, cfg) -> str:
        return f"baseline:{cls.name}"


@register_editor("identity")
@register_baseline("identity")
class IdentityEditor(Baseline):
    """Returns the source unchanged: a judge that rewards doing nothing gives this a high score."""

    description = "a sanity baseline that returns the source unchanged"

    def edit(self, sample, source, *, seed: int) -> EditResult:
        return EditResult(image=source.copy())


@register_editor("blank")
@register_baseline("blank")
class BlankEditor(Baseline):
    """Returns a uniform grey image of the source's size: any judge should score it near 0."""

    description = "a sanity baseline that returns a uniform grey image of the source's size"

    def edit(self, sample, source, *, seed: int) -> EditResult:
        return EditResult(image=Image.new("RGB", source.size, (128, 128, 128)))
