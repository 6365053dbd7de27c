"""Training algorithms: PreSa and its baselines."""
