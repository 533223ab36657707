"""Optional dependencies of the readers, imported when a file needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from llm_gym.errors import UserError

INSTALL_HINT = "pip install 'llm_gym[formats]'"


def require(module: str, needed_for: str) -> ModuleType:
    """``module`` imported, or a UserError naming the file kind and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.partition(".")[0]
        raise UserError(f"{needed_for} needs the {top} package, which is not installed:"
                        f" {INSTALL_HINT}") from None
