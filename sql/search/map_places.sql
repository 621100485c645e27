-- Every place of $map with its coordinates (for the place nearest a coordinate).
SELECT location_id, lat, lng FROM places WHERE map = $map AND lat IS NOT NULL AND lng IS NOT NULL ORDER BY location_id;
