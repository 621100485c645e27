-- How a map's file looked around its locations, for writing it back in its own shape.
SELECT format, envelope, location_count FROM maps WHERE map = $map;
