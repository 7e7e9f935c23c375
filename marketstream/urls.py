from django.urls import path

from marketstream import views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/v1/symbols", views.symbols, name="symbols"),
    path("api/v1/history", views.history, name="history"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
]
