"""Static files, served by the hub itself: the dashboard's modules and styles, its vendored
libraries, and the admin's CSS and scripts. `make run` has no proxy and nothing may come
from a CDN, and uvicorn serves no static files.

An async view rather than Django's `staticfiles.views.serve`: that one is synchronous, so
each file waits its turn on Channels' single sync thread, and a first visit asks for some
thirty files at once (measured: 30 small files took about 450 ms that way). The files are
small (the largest, lightweight-charts, 198 kB) and read from the OS's page cache, so
reading one on the event loop takes well under a millisecond. Browsers revalidate
(`Cache-Control: no-cache` with `Last-Modified`): an unchanged file is a 304. A proxy in
front may serve `manage.py collectstatic`'s copy instead.
"""

from __future__ import annotations

import mimetypes
import posixpath
from pathlib import Path

from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.http import http_date
from django.views.static import was_modified_since


def locate(path: str) -> Path | None:
    """The file of static `path` (as the staticfiles finders see it), or None; never
    outside their directories."""
    normalized = posixpath.normpath(path).lstrip("/")
    if not normalized or normalized.startswith("..") or normalized == ".":
        return None
    try:
        found = finders.find(normalized)
    except SuspiciousFileOperation:
        return None
    if not isinstance(found, str):
        return None
    file = Path(found)
    return file if file.is_file() else None


async def serve(request: HttpRequest, path: str) -> HttpResponse:
    """GET /static/PATH."""
    file = locate(path)
    if file is None:
        raise Http404(f"no static file {path[:200]!r}")
    stat = file.stat()
    if not was_modified_since(request.META.get("HTTP_IF_MODIFIED_SINCE"), int(stat.st_mtime)):
        return HttpResponseNotModified()
    content_type, encoding = mimetypes.guess_type(file.name)
    response = HttpResponse(file.read_bytes(), content_type=content_type or "application/octet-stream")
    response["Last-Modified"] = http_date(stat.st_mtime)
    response["Cache-Control"] = "no-cache"
    if encoding:
        response["Content-Encoding"] = encoding
    return response
