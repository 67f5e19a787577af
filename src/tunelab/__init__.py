"""tunelab: adapt an open LLM to your use case on the machine you have."""

__version__ = "0.1.0"
