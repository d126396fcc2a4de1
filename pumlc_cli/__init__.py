"""pumlc: multi-label classification from positive labels only (PU-MLC)."""
