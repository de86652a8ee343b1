"""Protocols: how a benchmark scores (see bench_lib.protocols.base). `default` is the harness's own; `viescore`,
`risebench`, `kris` and `re_edit` implement those benchmarks' published rules."""

from . import default, kris, re_edit, risebench, viescore  # noqa: F401  (each registers its protocol)
from .base import PROTOCOLS, Answer, Ask, Protocol, Question, SampleView, unmapped_categories, view_of

__all__ = ["PROTOCOLS", "Answer", "Ask", "Protocol", "Question", "SampleView", "make_protocol", "unmapped_categories",
           "view_of"]


def make_protocol(judge_cfg, rubrics) -> Protocol:
    """The configured protocol (`judge_cfg.protocol`), checking that `category_map` names its dimensions."""
    from ..config import ConfigError

    protocol = PROTOCOLS[judge_cfg.protocol](judge_cfg, rubrics)
    known = protocol.known_dimensions()
    wrong = sorted({t for t in judge_cfg.category_map.values() if known and t.strip().lower() not in known})
    if wrong:
        raise ConfigError(f"`category_map` maps to {wrong}, which are not dimensions of protocol "
                          f"{protocol.name!r}; it has {sorted(known)}.")
    return protocol
