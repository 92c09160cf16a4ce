"""Everything that talks SQL to the project's DuckDB file."""

from kdstudio.store.ingest import ImportOptions, ImportReport, import_file, import_table, parse_split_option
from kdstudio.store.ledger import CachedCall, Ledger, RunLabel, SpendRow, request_hash
from kdstudio.store.runs import RoundRow, RunLog, RunRow
from kdstudio.store.store import DB_NAME, Store

__all__ = ["DB_NAME", "CachedCall", "ImportOptions", "ImportReport", "Ledger", "RoundRow", "RunLabel", "RunLog",
           "RunRow", "SpendRow", "Store", "import_file", "import_table", "parse_split_option", "request_hash"]
