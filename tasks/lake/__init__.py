"""The lake: every read and write of tables and blobs (``store``), the tables' schemas, blob checks."""
