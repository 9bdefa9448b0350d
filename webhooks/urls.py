from __future__ import annotations

from django.urls import path

from . import views

app_name = "webhooks"

urlpatterns = [path("<str:slug>/", views.receive, name="receive")]
