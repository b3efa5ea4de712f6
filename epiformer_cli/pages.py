"""Self-contained HTML pages (the ``report.html`` of ``motifs`` and ``evaluate``): what every page
shares, written once.

A report is an output, never a way in: it works offline, its Content-Security-Policy forbids every
script, frame and fetch (only inline styles and ``data:`` images load), and every name that came
from a user's file (track, cell type, chromosome, path) goes through :func:`escape`. A leaf module.
"""

from __future__ import annotations

import html
from typing import Any, Mapping


def escape(value: Any) -> str:
    """``value`` as HTML text or attribute value: ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def head(title: str, style: str) -> str:
    """The page up to ``<body>``: UTF-8, the policy above, ``title`` (escaped) and an inline ``style``."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>")


def settings_table(settings: Mapping[str, Any]) -> str:
    """A two-column table of what a run read and chose (every key and value escaped); "" for none."""
    if not settings:
        return ""
    rows = "".join(f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in settings.items())
    return f'<table class="settings" id="settings-table">{rows}</table>'
