from django.apps import AppConfig


class LightfastCloudConfig(AppConfig):
    name = "lightfast_cloud"
    verbose_name = "Lightfast Cloud"
