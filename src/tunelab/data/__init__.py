"""Data: read sources, normalize records, render with a template, tokenize with label masks, batch."""
