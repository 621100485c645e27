-- Every map of the lake by name (what the vector cache is kept for).
SELECT map FROM maps ORDER BY map;
