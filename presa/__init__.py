"""presa: the PreSa trainer, its baselines, and the evaluator."""

__version__ = "0.1.0"
