"""The façade's vocabulary: every type the CLI, the TUI and `render` see, and the parsers that turn a user's words
into them. Those layers import from here and from kdstudio.project, never from the modules below (the loop, the
store, the plugin registry), so that the core can be rearranged without touching them."""

from __future__ import annotations

from kdstudio.audit import AuditReport, Suspect
from kdstudio.cascade import CascadeReport
from kdstudio.check import MIN_CHECKED, PPI_MIN_CHECKED, CheckDraw, CheckReport, CheckTruth, Grades, narrower
from kdstudio.config import DUCKDB_MEMORY_ENV, DUCKDB_MEMORY_RUN, Label, parse_labels_option, read_labels_file
from kdstudio.engine import Engine
from kdstudio.estimates import Estimate
from kdstudio.events import (
    Event,
    EventFn,
    Labelled,
    RoundDone,
    RunDone,
    RunStarted,
    SamplesGenerated,
    TeacherChecked,
    Teaching,
)
from kdstudio.export import ExportReport
from kdstudio.labels_export import Written as LabelsWritten
from kdstudio.loop import TEACHER_SHORTCUTS, DistillConfig, Plan, RoundReport, RunResult, Shortcut
from kdstudio.method_auto import kept_on as auto_kept_on
from kdstudio.method_auto import text as auto_text
from kdstudio.method_auto import trusted_choice as auto_trusted_choice
from kdstudio.method_auto import warning as auto_warning
from kdstudio.plugins import Plugins, Registered, get_plugins
from kdstudio.project import ProgressView, Status, TriageItem
from kdstudio.review import FILTERS as REVIEW_FILTERS
from kdstudio.review import Agreement, PullReport, PushReport, ReviewItem, ReviewState
from kdstudio.run_state import KeptBy, rule_of
from kdstudio.settings import Setting, settings_of
from kdstudio.store import ImportOptions, ImportReport, RoundRow, RunRow, SpendRow, parse_split_option
from kdstudio.store.browse import Filters, Page
from kdstudio.store.labelled import LABEL_SOURCES, SPLITS, LabelFilter

__all__ = [
    "DUCKDB_MEMORY_ENV",
    "DUCKDB_MEMORY_RUN",
    "LABEL_SOURCES",
    "MIN_CHECKED",
    "PPI_MIN_CHECKED",
    "REVIEW_FILTERS",
    "SPLITS",
    "TEACHER_SHORTCUTS",
    "Agreement",
    "AuditReport",
    "CascadeReport",
    "CheckDraw",
    "CheckReport",
    "CheckTruth",
    "DistillConfig",
    "Engine",
    "Estimate",
    "Event",
    "EventFn",
    "ExportReport",
    "Filters",
    "Grades",
    "ImportOptions",
    "ImportReport",
    "KeptBy",
    "Label",
    "LabelFilter",
    "Labelled",
    "LabelsWritten",
    "Page",
    "Plan",
    "Plugins",
    "ProgressView",
    "PullReport",
    "PushReport",
    "Registered",
    "ReviewItem",
    "ReviewState",
    "RoundDone",
    "RoundReport",
    "RoundRow",
    "RunDone",
    "RunResult",
    "RunRow",
    "RunStarted",
    "SamplesGenerated",
    "Setting",
    "Shortcut",
    "SpendRow",
    "Status",
    "Suspect",
    "TeacherChecked",
    "Teaching",
    "TriageItem",
    "auto_kept_on",
    "auto_text",
    "auto_trusted_choice",
    "auto_warning",
    "get_plugins",
    "narrower",
    "parse_labels_option",
    "parse_split_option",
    "read_labels_file",
    "rule_of",
    "settings_of",
]
