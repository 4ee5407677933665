"""infercore: composable LLM-inference components.

>>> import infercore
>>> y = infercore.ops.rms_norm(x, weight, 1e-6)
>>> infercore.registry.backends("norm.rms")
"""

from infercore import log as _log
from infercore import ops, registry
from infercore.config import Config, ConfigError
from infercore.nn import quantize_model as quantize_model
from infercore.plugins import hookimpl
from infercore.registry import Backend, Family, NoBackendError, create, use_backend

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Config",
    "ConfigError",
    "Family",
    "NoBackendError",
    "__version__",
    "create",
    "hookimpl",
    "ops",
    "registry",
    "use_backend",
]

_log.configure()
