-- Every blob path any images row refers to, superseded rows included (the raw files, not the
-- view): a blob outside this set is an orphan that gc may remove.
SELECT DISTINCT path
FROM lake_images
WHERE path IS NOT NULL;
