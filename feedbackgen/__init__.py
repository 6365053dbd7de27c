"""feedbackgen: turn offline safe-RL trajectories into versioned feedback datasets.

Importing this package needs neither torch, nor a simulator, nor Typer.
"""

from feedbackgen.errors import FeedbackgenError

__version__ = "0.1.0"
__all__ = ["FeedbackgenError", "__version__"]
