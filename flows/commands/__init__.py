"""The sub-commands of ``svcluster``, one module per step; each has ``register(app)``."""

from svcluster.flows.commands import assign, clusters, embed, fetch, lake, maps, pipeline, report, search

# In the order `svcluster --help` lists them.
COMMAND_MODULES = [maps, fetch, embed, clusters, assign, report, search, pipeline, lake]
