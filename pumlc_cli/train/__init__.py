"""The training side: the trainer loop, the recipe and its validated config, EMA, torchrun launching and
run folders."""
