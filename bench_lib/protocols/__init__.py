"""Protocols: how a benchmark scores (see bench_lib.protocols.base), one module each, registered under their names
(bench_lib.registry.PROTOCOLS: `default` is the harness's own; the others implement those benchmarks' published
rules)."""

from ..config import ConfigError
from ..prompt_files import load_prompt_file
from ..registry import FORMATS, PROTOCOLS
from .base import Answer, Ask, Protocol, Question, SampleView, unmapped_categories, view_of

__all__ = ["PROTOCOLS", "Answer", "Ask", "Protocol", "Question", "SampleView", "make_protocol", "resolve_protocol",
           "unmapped_categories", "view_of"]


def resolve_protocol(judge_cfg, format_name: str) -> str:
    """`protocol: auto` becomes the protocol of the format that read the data (a known benchmark's format), else
    `default`; an explicit protocol is kept. Sets and returns `judge_cfg.protocol`."""
    if judge_cfg.protocol == "auto":
        judge_cfg.protocol = FORMATS.get(format_name).protocol if format_name in FORMATS else "default"
    return judge_cfg.protocol


def make_protocol(judge_cfg, rubrics) -> Protocol:
    """The configured protocol (`judge_cfg.protocol`), checking that `category_map` names its dimensions; with
    `judge_prompts`, its texts read from the benchmark's own file (bench_lib.prompt_files). A `protocol: auto` that
    no data format has resolved (`resolve_protocol`: a script or a test that reads no dataset) is `default`, as it
    is for data of no benchmark's format."""
    cls = PROTOCOLS.get("default" if judge_cfg.protocol == "auto" else judge_cfg.protocol)
    prompts = None
    if judge_cfg.judge_prompts:
        prompts = load_prompt_file(judge_cfg.judge_prompts, judge_cfg.judge_prompts_sha256,
                                   member=cls.prompt_file_member)
    protocol = cls(judge_cfg, rubrics, prompts)
    protocol.check_mode(judge_cfg.judge_mode)
    known = protocol.known_dimensions()
    wrong = sorted({t for t in judge_cfg.category_map.values() if known and t.strip().lower() not in known})
    if wrong:
        raise ConfigError(f"`category_map` maps to {wrong}, which are not dimensions of protocol "
                          f"{protocol.name!r}; it has {sorted(known)}.")
    return protocol
