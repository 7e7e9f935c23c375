"""The project's routes with the admin on, as MARKETSTREAM_ADMIN=true gives them."""

from marketstream.urls import patterns

urlpatterns = patterns(with_admin=True)
