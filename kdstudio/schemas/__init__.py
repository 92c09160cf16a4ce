"""JSON Schemas of the documents `--json` prints (see docs/json.md)."""
