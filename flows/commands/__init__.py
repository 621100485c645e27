"""The sub-commands of ``svcluster``, one module per step; each has ``register(app)``."""

from flows.commands import maps

# In the order `svcluster --help` lists them.
COMMAND_MODULES = [maps]
