"""Shipping a run out of tunelab: a merged model folder (and, later, GGUF, Ollama, the Hub)."""
