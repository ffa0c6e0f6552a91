from django.apps import AppConfig


class KickoutsConfig(AppConfig):
    name = "kickouts"
    verbose_name = "Kickout retries"
