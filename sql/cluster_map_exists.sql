-- Whether a map has been ingested.
SELECT 1 FROM maps WHERE map = $map;
