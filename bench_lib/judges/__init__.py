"""Judge backends, one module each, registered under their names (the contract: bench_lib.backends, with the
requests and answers in bench_lib.judging; `policy`: the parse and re-ask policy every backend shares; the names:
bench_lib.registry.JUDGES, which imports a backend's module the first time its name is used)."""

from ..backends import Judge, register_judge
from ..judging import Judgement, JudgeRequest
from ..registry import JUDGES
from .rubrics import Rubrics

__all__ = ["JUDGES", "Judge", "Judgement", "JudgeRequest", "Rubrics", "register_judge"]
