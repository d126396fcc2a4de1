"""The audit side: scoring suspect labels from model probabilities, cross-fitted folds, the report and relabel."""
