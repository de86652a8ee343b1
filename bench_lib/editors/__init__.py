"""Editor backends, registered under their names (see bench_lib.backends for the contract):
`diffusers` (any diffusers editing pipeline, with LoRA and speed options), `precomputed` (edits made
elsewhere), and the sanity baselines `identity` and `blank`."""

from ..backends import EDITORS, Editor, EditResult, register_editor
from . import baselines, diffusers_pipeline, precomputed  # noqa: F401  (each registers its backend)

__all__ = ["EDITORS", "EditResult", "Editor", "register_editor"]
