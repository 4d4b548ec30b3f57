"""Training jobs: from the decision log to a better model."""
