from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, path, re_path

from marketstream import assets, views


def patterns(with_admin: bool) -> list[URLPattern | URLResolver]:
    """The routes; the Django admin only `with_admin` (MARKETSTREAM_ADMIN): it is not public by default."""
    routes: list[URLPattern | URLResolver] = [
        path("", views.index, name="index"),
        path("api/v1/symbols", views.symbols, name="symbols"),
        path("api/v1/history", views.history, name="history"),
        path("api/v1/bars", views.bars, name="bars"),
        path("api/v1/tokens", views.tokens, name="tokens"),
        path("api/v1/ticks", views.ticks, name="ticks"),
        path("healthz", views.healthz, name="healthz"),
        path("metrics", views.metrics_view, name="metrics"),
    ]
    if with_admin:
        routes.append(path("admin/", admin.site.urls))
    # the dashboard's modules, styles and vendored libraries, and the admin's (marketstream/assets.py)
    routes.append(re_path(r"^static/(?P<path>.*)$", assets.serve, name="static"))
    return routes


urlpatterns = patterns(settings.MARKETSTREAM["ADMIN"])
