"""Judge backends, registered under their names (bench_lib.backends has the base class, bench_lib.judging the
requests and answers, `policy` the parse and re-ask policy every backend shares): `qwen_vl`, a Qwen-VL model
through transformers, in `logits` or `generate` mode."""

from ..backends import JUDGES, Judge, register_judge
from ..judging import Judgement, JudgeRequest
from . import qwen_vl  # noqa: F401  (registers its backend)
from .rubrics import Rubrics

__all__ = ["JUDGES", "Judge", "Judgement", "JudgeRequest", "Rubrics", "register_judge"]
