"""Editor backends, one module each, registered under their names (the contract: bench_lib.backends; the names:
bench_lib.registry.EDITORS, which imports a backend's module the first time its name is used)."""

from ..backends import Editor, EditResult, register_editor
from ..registry import EDITORS

__all__ = ["EDITORS", "EditResult", "Editor", "register_editor"]
