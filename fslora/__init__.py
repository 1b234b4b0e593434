"""FSLoRA person search: freq-spatial low-rank adapters on VMamba for one-stage person search.

The top level re-exports the adapter API (`fslora.adapters`); backbones, ops, models and data are
imported from their subpackages (`fslora.backbones`, `fslora.ops`, ...) so `import fslora` stays light.
"""

from .adapters import *  # noqa: F403
from .adapters import __all__ as _adapters_all

__all__ = list(_adapters_all)
__version__ = "0.1.0"
