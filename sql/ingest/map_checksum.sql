-- The checksum of the file a map was last ingested from, and whether that ingest kept every
-- object (place_count is NULL for maps written before duplicates were kept).
SELECT file_sha256, place_count IS NOT NULL AS complete FROM maps WHERE map = $map;
