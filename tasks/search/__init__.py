"""Search: places found by words, by example or by a picture."""
