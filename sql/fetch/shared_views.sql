-- Views already bought with these view settings for some panoramas, by any place of any map:
-- a panorama and heading is bought once, and every other place on that panorama reuses the
-- blob (no request). Any 'ok' row fetched from the API counts, superseded ones included (the raw
-- files: their blobs are whole and gc keeps them while a row names them); folder imports do not
-- (the notebook fetched by coordinates, not by this panorama).
-- $panos: pano ids (VARCHAR[]); $headings (INTEGER[]); $fov, $pitch; $width, $height (the size;
-- rows without settings read as 640x640, fov 90, pitch 0, as in the images view).
SELECT pano_id, heading,
       arg_max(location_id, written_at) AS location_id,
       arg_max(path, written_at) AS path,
       arg_max(sha256, written_at) AS sha256,
       arg_max(size_bytes, written_at) AS size_bytes,
       arg_max(width, written_at) AS width,
       arg_max(height, written_at) AS height
FROM lake_images
WHERE status = 'ok' AND source = 'api' AND path IS NOT NULL
  AND pano_id IN (SELECT unnest($panos::VARCHAR[]))
  AND heading IN (SELECT unnest($headings::INTEGER[]))
  AND coalesce(fov, 90) = $fov AND coalesce(pitch, 0) = $pitch
  AND coalesce(width, 640) = $width AND coalesce(height, 640) = $height
GROUP BY pano_id, heading;
