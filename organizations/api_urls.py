"""REST API v1 routes of the organizations app."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
