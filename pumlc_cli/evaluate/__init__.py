"""The evaluation side: metrics, batched (sharded) inference, GPU decoding, evaluation of a checkpoint, plots and
seed statistics."""
