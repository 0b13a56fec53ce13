"""Reports: the :class:`Report` model, its JSON schema and formats, and the views (terminal,
HTML, plots) that render it. Importing this package loads no heavy dependency."""

from gapscope.report.formats import FORMATS, render_text, report_schema, to_csv
from gapscope.report.model import READABLE_SCHEMAS, SCHEMA, Report, upgrade_report

__all__ = [
    "FORMATS",
    "READABLE_SCHEMAS",
    "SCHEMA",
    "Report",
    "render_text",
    "report_schema",
    "to_csv",
    "upgrade_report",
]
