"""A query carried into every URI of a playlist, as plain text with no I/O.

With play authorization a viewer's token arrives as ``?token=…`` on the master playlist; a
player follows the URIs the playlists hold and sends no cookie, so each of them must carry the
token too. :func:`carry_query` appends the query to every URI of a rendered master or media
playlist, whatever tag holds it: URI lines (variant playlists, segments) and ``URI="…"``
attributes (parts, the preload hint, rendition reports). A URI that has a query already gets
``&``; one that is absolute (``scheme:``) or names another host is left alone, so a token is
never handed to a third party.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

__all__ = ["carry_query", "query_of"]

_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def query_of(parameters: Mapping[str, str]) -> str:
    """``parameters`` as a query string (``token=…``), each value percent-encoded."""
    return urllib.parse.urlencode(parameters, quote_via=urllib.parse.quote)


def _with(uri: str, query: str) -> str:
    if not uri or _ABSOLUTE.match(uri):
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


def carry_query(playlist: str, query: str) -> str:
    """``playlist`` with ``query`` appended to each URI it holds (see the module comment)."""
    if not query:
        return playlist
    lines = []
    for line in playlist.split("\n"):
        if line and not line.startswith("#"):
            line = _with(line, query)
        elif "URI=" in line:
            line = _URI_ATTRIBUTE.sub(lambda m: f'URI="{_with(m.group(1), query)}"', line)
        lines.append(line)
    return "\n".join(lines)
