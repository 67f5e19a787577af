"""How much memory a training run needs (`tunelab memory`)."""
