"""Report: the offline HTML page of a run (its data, geography, map image and assets)."""
