"""Judge backends, one module each, registered under their names (the contract: bench_lib.backends; the names:
bench_lib.registry.JUDGES, which imports a backend's module the first time its name is used)."""

from ..backends import Judge, register_judge
from ..registry import JUDGES
from .common import Judgement, JudgeRequest
from .rubrics import Rubrics

__all__ = ["JUDGES", "Judge", "Judgement", "JudgeRequest", "Rubrics", "register_judge"]
