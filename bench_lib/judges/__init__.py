"""Judge backends, registered under their names (see bench_lib.backends for the contract): `qwen_vl`, a
Qwen-VL model through transformers, in `logits` or `generate` mode."""

from ..backends import JUDGES, Judge, register_judge
from . import qwen_vl  # noqa: F401  (registers its backend)
from .common import Judgement, JudgeRequest
from .rubrics import Rubrics

__all__ = ["JUDGES", "Judge", "Judgement", "JudgeRequest", "Rubrics", "register_judge"]
