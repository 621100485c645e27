-- Whether a map has been ingested, and the checksum of its current version (maps.file_sha256,
-- recorded with every run made on it).
SELECT file_sha256 FROM maps WHERE map = $map;
