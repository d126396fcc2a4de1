"""What every running process shares, below training and evaluation: process groups, stop signals and the
checkpoint file format (evaluation loads what training saves, so neither side owns it)."""
