"""Hyperparameter search with Ray Tune. Ray is imported lazily, inside search only."""
