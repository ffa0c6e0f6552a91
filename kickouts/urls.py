from django.urls import path, register_converter

from .converters import GuidConverter
from .views import (
    account,
    bulk,
    corrected_files,
    health,
    history,
    overview,
    queue,
    reconcile,
    retries,
    tasks,
)

register_converter(GuidConverter, "guid")

urlpatterns = [
    path("", queue.home, name="home"),
    path("imports/", tasks.task_list, name="task_list"),
    path("tasks/<guid:guid>/", tasks.task_detail, name="task_detail"),
    path("tasks/<guid:guid>/retry/", retries.retry_form, name="retry_form"),
    path("batches/smart-path/", retries.smart_batch_preview, name="smart_batch_preview"),
    path("retries/<int:pk>/", retries.retry_detail, name="retry_detail"),
    path("retries/<int:pk>/status/", retries.status_panel, name="status_panel"),
    path("retries/<int:pk>/reconcile/", reconcile.decide, name="reconcile_retry"),
    path("retries/waiting/", reconcile.waiting_for_decision, name="waiting_for_decision"),
    path("corrected-file/", corrected_files.corrected_file_form, name="corrected_file_form"),
    path(
        "retries/<int:pk>/file/",
        corrected_files.corrected_file_download,
        name="corrected_file_download",
    ),
    path("bulk/", bulk.bulk_form, name="bulk_form"),
    path("bulk/<int:pk>/", bulk.bulk_detail, name="bulk_detail"),
    path("bulk/<int:pk>/cancel/", bulk.bulk_cancel, name="bulk_cancel"),
    path("bulks/", bulk.bulk_list, name="bulk_list"),
    path("history/", history.history, name="history"),
    path("history.csv", history.history_csv, name="history_csv"),
    path("kickouts/", queue.queue, name="queue"),
    path("kickouts/group/", queue.queue_group, name="queue_group"),
    path("kickouts/handled/", queue.mark_many_handled, name="mark_many_handled"),
    path("kickouts.csv", queue.queue_csv, name="queue_csv"),
    path("tasks/<guid:guid>/kickouts.csv", queue.import_csv, name="import_csv"),
    path("tasks/<guid:guid>/handled/", queue.mark_handled, name="mark_handled"),
    path("tasks/<guid:guid>/reopen/", queue.reopen, name="reopen"),
    path("overview/", overview.overview_page, name="overview"),
    path("overview.csv", overview.overview_csv, name="overview_csv"),
    path("settings/", account.user_settings, name="user_settings"),
    path("health/live/", health.live, name="health_live"),
    path("health/ready/", health.ready, name="health_ready"),
]
