-- The checksum of the file a map was last ingested from.
SELECT file_sha256 FROM maps WHERE map = $map;
