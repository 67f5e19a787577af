"""`tunelab serve`: an OpenAI-compatible server (inference, files, fine-tuning jobs) on one machine."""
