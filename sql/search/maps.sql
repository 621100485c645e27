-- Every map of the lake, by name (a search over --all-maps).
SELECT map FROM maps ORDER BY map;
