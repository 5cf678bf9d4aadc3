"""GenFusion Studio: sparse or casual captures -> complete Gaussian-splatting scenes.

The package follows the pipeline: ``data`` (captures -> Scene) -> ``splat`` (Gaussians,
rendering, reconstruction) -> ``generation`` (the RGB-D repair model) -> ``fusion`` (the
render/repair/supervise loop) -> ``export`` and ``eval``. Imports only point down that list.
"""

from genfusion.errors import GenFusionError
from genfusion.progress import ProgressEvent

__version__ = "0.1.0"
__all__ = ["GenFusionError", "ProgressEvent", "__version__"]
