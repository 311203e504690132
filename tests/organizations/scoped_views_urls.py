"""Test-only URLconf: a generic view on the tenant base class, to check its queryset scoping."""

from django.urls import path
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from organizations.models import ApiKey
from organizations.tenancy import OrganizationScopedGenericAPIView


class KeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["lookup_id"]


class KeyList(OrganizationScopedGenericAPIView, ListAPIView):
    queryset = ApiKey.objects.all()
    serializer_class = KeySerializer


class KeyDetail(OrganizationScopedGenericAPIView, RetrieveAPIView):
    queryset = ApiKey.objects.all()
    serializer_class = KeySerializer
    lookup_field = "lookup_id"


urlpatterns = [
    path("api/v1/test-keys", KeyList.as_view()),
    path("api/v1/test-keys/<str:lookup_id>", KeyDetail.as_view()),
]
