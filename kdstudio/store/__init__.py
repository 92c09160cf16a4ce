"""Everything that talks SQL to the project's DuckDB file."""

from kdstudio.store.ingest import ImportOptions, ImportReport, import_file, import_table, parse_split_option
from kdstudio.store.store import DB_NAME, Store

__all__ = ["DB_NAME", "ImportOptions", "ImportReport", "Store", "import_file", "import_table", "parse_split_option"]
