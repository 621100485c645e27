-- How many places map $map has, and how many of them have at least one 'ok' view.
SELECT count(*) AS locations,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM images i WHERE i.location_id = l.location_id AND i.status = 'ok'
       )) AS with_views
FROM places l
WHERE l.map = $map;
