"""Reports: the :class:`Report` object, its JSON schema and formats, and terminal rendering."""

from gapscope.report.formats import FORMATS, render_text, report_schema, to_csv
from gapscope.report.model import DIRECTIONS, SCHEMA, Report, direction_of

__all__ = [
    "DIRECTIONS",
    "FORMATS",
    "SCHEMA",
    "Report",
    "direction_of",
    "render_text",
    "report_schema",
    "to_csv",
]
