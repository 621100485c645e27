-- Every object of the matched places ($ids) of $map, best match first (then input order), each
-- with $tag appended to extra.tags (kept once): the study set a search exports.
SELECT json_merge_patch(l.raw::JSON, json_object('extra', json_object('tags', to_json(
           CASE WHEN list_contains(coalesce(l.tags, []::VARCHAR[]), $tag) THEN coalesce(l.tags, []::VARCHAR[])
                ELSE list_append(coalesce(l.tags, []::VARCHAR[]), $tag) END))))::VARCHAR AS json
FROM locations l
WHERE l.map = $map AND list_contains($ids, l.location_id)
ORDER BY list_position($ids, l.location_id), l.position;
