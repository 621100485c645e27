"""The demo's bundled sample map and the scenes its local Street View server draws."""
