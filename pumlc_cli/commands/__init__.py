"""Sub-commands of the `pumlc` CLI, one module each."""
