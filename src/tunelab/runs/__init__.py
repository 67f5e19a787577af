"""The run directory: layout and writing, what kind of run a folder holds, loading a run's model."""
