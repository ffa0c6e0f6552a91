from django.contrib import admin

from .models import RetryAttempt


@admin.register(RetryAttempt)
class RetryAttemptAdmin(admin.ModelAdmin):
    """Read-only: retry records are append-only for people."""

    list_display = [
        "id",
        "requested_at",
        "requested_by",
        "kind",
        "source_task_guid",
        "batch_mode",
        "outcome",
        "new_task_guid",
    ]
    list_filter = [
        "kind",
        "outcome",
        "batch_mode",
        "follow_up__status",
        "requested_by",
        "requested_at",
    ]
    search_fields = ["source_task_guid", "new_task_guid", "batch_code", "import_note"]
    date_hierarchy = "requested_at"
    list_select_related = ["requested_by"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
