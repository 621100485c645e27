"""Export: a map written back in its own shape, with a cluster tag on every object."""
