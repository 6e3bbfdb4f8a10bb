"""Reports: notebook templates executed by papermill into a notebook, an HTML page and a manifest."""

from workbench.reports.runner import (
    ReportFailed,
    ReportResult,
    check_parameters,
    declared_parameters,
    find_notebook,
    parse_parameters,
    record,
    run_report,
    setup_notebook,
    show_table,
)

__all__ = [
    "ReportFailed",
    "ReportResult",
    "check_parameters",
    "declared_parameters",
    "find_notebook",
    "parse_parameters",
    "record",
    "run_report",
    "setup_notebook",
    "show_table",
]
