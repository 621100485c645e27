-- The maps that hold place $location_id, by name.
SELECT DISTINCT map FROM places WHERE location_id = $location_id ORDER BY map;
