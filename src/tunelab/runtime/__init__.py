"""Facts about the machine and installation tunelab runs on (`tunelab doctor`)."""
