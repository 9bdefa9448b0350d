from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from agentflow.lib.admin import ReadOnlyAdmin, milliseconds

from . import actions, alert_rules, audit, controls, queue, stops
from .models import (
    Alert,
    AlertRule,
    Attempt,
    AuditEntry,
    BatchRun,
    EmergencyStop,
    Job,
    QueuePause,
    ResultAction,
    ResultDelivery,
    Run,
    StopCondition,
)


@admin.register(BatchRun)
class BatchRunAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Run history: read-only (the engine records it; retention deletes it)."""

    list_display = [
        "started_at",
        "batch",
        "target_name",
        "status",
        "duration",
        "worker",
        "counts_words",
        "short_error",
    ]
    list_filter = ["batch", "status", "scope"]
    search_fields = ["error", "target_name"]
    date_hierarchy = "started_at"
    show_full_result_count = False

    @admin.display(description="Duration", ordering="duration_ms")
    def duration(self, obj: BatchRun) -> str:
        return milliseconds(obj.duration_ms)

    @admin.display(description="Counts")
    def counts_words(self, obj: BatchRun) -> str:
        return obj.counts_text[:120]

    @admin.display(description="Error")
    def short_error(self, obj: BatchRun) -> str:
        return obj.error[:80]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """The alerts' history. Alerts are raised by the engine and its rules; an operator only
    resolves them (the action). A rule's alert that still holds opens again at the next
    evaluation: change the rule (or fix the cause) instead."""

    list_display = [
        "created_at",
        "level",
        "rule",
        "subject",
        "short_message",
        "last_seen",
        "count",
        "reopened",
        "resolved_at",
    ]
    list_filter = ["level", "rule", ("resolved_at", admin.EmptyFieldListFilter), "source"]
    search_fields = ["message", "source", "subject"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "level",
        "rule",
        "subject",
        "source",
        "message",
        "value",
        "created_at",
        "last_seen",
        "count",
        "reopened",
    ]
    actions = ["resolve"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Message")
    def short_message(self, obj: Alert) -> str:
        return obj.message[:120]

    @admin.action(description="Mark selected alerts resolved")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        ids = sorted(queryset.filter(resolved_at__isnull=True).values_list("pk", flat=True))
        actor = audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))
        target = audit.Target("alert", ",".join(map(str, ids))[:255], f"{len(ids)} open alert(s)")
        try:
            with audit.control("alert.resolve", actor, target) as ctl:
                count = Alert.objects.filter(pk__in=ids).update(resolved_at=timezone.now())
                ctl.note(f"{count} resolved")
        except audit.Refused as exc:
            self.message_user(request, exc.message, messages.ERROR)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    """One row per registered condition (scheduler.alert_rules): edit its threshold, window,
    level, cooldown, or switch it off. Rows are created with the condition's defaults; a rule
    whose condition is no longer registered is listed as such and evaluates nothing."""

    list_display = [
        "key",
        "condition",
        "level",
        "threshold",
        "window_seconds",
        "min_samples",
        "cooldown_seconds",
        "enabled",
    ]
    list_editable = ["level", "threshold", "window_seconds", "min_samples", "cooldown_seconds", "enabled"]
    list_filter = ["enabled", "level"]
    readonly_fields = ["key", "condition", "unit", "updated_at"]
    fields = [
        "key",
        "condition",
        "unit",
        "enabled",
        "level",
        "threshold",
        "window_seconds",
        "min_samples",
        "cooldown_seconds",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one row per registered condition, created with its defaults

    def has_delete_permission(self, request: HttpRequest, obj: AlertRule | None = None) -> bool:
        return False  # disable it instead (a deleted row is created again with the defaults)

    @admin.display(description="Condition")
    def condition(self, obj: AlertRule) -> str:
        return alert_rules.describe(obj)

    @admin.display(description="Threshold unit")
    def unit(self, obj: AlertRule) -> str:
        condition = alert_rules.find_condition(obj.key)
        if condition is None:
            return "?"
        return condition.unit or "none (holds at once)"


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The control audit, read-only: rows are written by scheduler.audit and never edited."""

    list_display = ["created_at", "actor_label", "action", "target_label", "result", "message", "source"]
    list_filter = ["action", "result", "source", "actor_label"]
    search_fields = ["actor_label", "target_label", "target_id", "reason", "message"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_select_related = ["actor"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False


# --- the execution queue ---------------------------------------------------------------------------


class JobAdminForm(forms.ModelForm):
    """The kind is chosen among the registered actions; params are validated by the action
    (Job.clean), so a bad parameter is a form error naming it, never a 500."""

    kind = forms.ChoiceField(choices=())

    class Meta:
        model = Job
        fields = [
            "name",
            "kind",
            "params",
            "prompt_template",
            "priority",
            "timeout_seconds",
            "max_attempts",
            "on_error",
            "on_error_job",
            "concurrency_limit",
            "enabled",
            "tags",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(a.key, f"{a.label} ({a.key})") for a in actions.actions()]
        current = self.instance.kind if self.instance and self.instance.kind else None
        if current and current not in dict(choices):
            choices.append((current, f"{current} (not registered)"))
        kind = self.fields["kind"]
        assert isinstance(kind, forms.ChoiceField)
        kind.choices = choices


class ResultActionInline(admin.TabularInline):
    """What happens with the job's result: on success / on failure, a channel, a PR comment or
    another job (scheduler/results.py)."""

    model = ResultAction
    fk_name = "job"
    extra = 0
    fields = ["when", "kind", "channel", "target_job", "enabled"]


class ResultDeliveryInline(ReadOnlyAdmin, admin.TabularInline):
    model = ResultDelivery
    fk_name = "run"
    extra = 0
    fields = ("kind", "when", "target", "status", "attempts", "response_status", "note", "error", "sent_at")
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    form = JobAdminForm
    inlines = [ResultActionInline]
    list_display = ["name", "kind", "priority", "enabled", "max_attempts", "timeout_seconds", "on_error"]
    list_filter = ["kind", "priority", "enabled", "on_error"]
    search_fields = ["name"]
    actions = ["run_now"]

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        """A system job (a batch) is never deleted: its runs are the batch's history."""
        if obj is not None and obj.system:
            return False
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        system = list(queryset.filter(system=True).values_list("name", flat=True))
        if system:
            self.message_user(request, f"system jobs are not deleted: {', '.join(system)}", messages.WARNING)
        super().delete_queryset(request, queryset.filter(system=False))

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> Any:
        if obj is not None and obj.system:
            return ["name", "params"]  # what makes it the batch's job (Job.clean keeps its kind)
        return super().get_readonly_fields(request, obj)

    @admin.action(description="Run the selected jobs now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        started = []
        for job in queryset:
            try:
                run = queue.enqueue(job, trigger=Run.Trigger.USER, triggered_by=request.user.get_username())
            except ValidationError as exc:
                self.message_user(request, f"{job.name}: {'; '.join(exc.messages)}", messages.ERROR)
                continue
            started.append(f"{job.name} → run {run.pk} ({run.status})")
        if started:
            self.message_user(request, "; ".join(started), messages.SUCCESS)


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "number",
        "id",
        "status",
        "error_class",
        "error",
        "session_key",
        "started_at",
        "finished_at",
        "worker",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Runs are read-only; retry and cancel go through the controls (role check + audit row)."""

    list_display = [
        "id",
        "job_name",
        "kind",
        "priority",
        "status",
        "attempts",
        "queued_at",
        "started_at",
        "finished_at",
        "error_class",
    ]
    list_filter = ["status", "priority", "kind", "error_class", "trigger"]
    search_fields = ["job_name", "error", "dedupe_key", "triggered_by"]
    date_hierarchy = "queued_at"
    show_full_result_count = False
    inlines = [AttemptInline, ResultDeliveryInline]
    actions = ["retry_runs", "cancel_runs"]

    def _control(self, request: HttpRequest, queryset: QuerySet[Run], name: str) -> None:
        actor = audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))
        fn = controls.retry_run if name == "retry" else controls.cancel_run
        done, refused = 0, []
        for run in queryset:
            try:
                fn(actor, run)
                done += 1
            except audit.Refused as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return
            except ValidationError as exc:
                refused.append("; ".join(exc.messages))
        if done:
            self.message_user(request, f"{name}: {done} run(s)", messages.SUCCESS)
        for message in refused:
            self.message_user(request, message, messages.WARNING)

    @admin.action(description="Retry the selected runs (failed, aborted, lost, cancelled)")
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._control(request, queryset, "retry")

    @admin.action(description="Cancel the selected runs (waiting or running)")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._control(request, queryset, "cancel")


@admin.register(QueuePause)
class QueuePauseAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Pauses are made and lifted by the controls (``manage.py queue pause|resume``, later the
    queue page); here they are shown, and "resume" lifts the selected ones."""

    list_display = ["scope", "value", "who", "reason", "since"]
    actions = ["resume_selected"]

    @admin.action(description="Resume (lift) the selected pauses")
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[QueuePause]) -> None:
        actor = audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))
        for pause in queryset:
            try:
                released = controls.resume(actor, pause.scope, pause.value)
            except audit.Refused as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.WARNING)
                continue
            self.message_user(request, f"{pause}: lifted, {released} run(s) released", messages.SUCCESS)


class EmergencyStopForm(forms.ModelForm):
    """Engaging is the form's validation: a refusal or a bad scope is shown on the form."""

    request: HttpRequest | None = None
    engaged: EmergencyStop | None = None

    class Meta:
        model = EmergencyStop
        fields = ["scope", "value", "reason"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors or self.request is None:
            return data
        try:
            self.engaged = stops.engage(
                _admin_actor(self.request),
                data.get("scope") or "global",
                data.get("value") or "",
                data.get("reason") or "",
            )
        except audit.Refused as exc:
            raise ValidationError(exc.message) from None
        return data


def _admin_actor(request: HttpRequest) -> audit.Actor:
    return audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))


@admin.register(EmergencyStop)
class EmergencyStopAdmin(admin.ModelAdmin):
    """Engage a stop ("Add": scope, value, reason; it goes through ``stops.engage``, the same audited
    control as the header button, the command and the API) and release the selected ones; every
    other field is the record the stop wrote."""

    form = EmergencyStopForm
    list_display = [
        "id",
        "scope",
        "value",
        "reason",
        "who",
        "automatic",
        "engaged_at",
        "released_at",
        "released_by",
    ]
    list_filter = ["scope", "automatic"]
    search_fields = ["reason", "who", "value", "release_reason"]
    actions = ["release_selected"]

    def has_change_permission(self, request: HttpRequest, obj: EmergencyStop | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: EmergencyStop | None = None) -> bool:
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type("EngageForm", (form,), {"request": request})

    def save_model(self, request: HttpRequest, obj: EmergencyStop, form: Any, change: bool) -> None:
        assert form.engaged is not None  # engaged by the form's validation
        obj.pk = form.engaged.pk
        obj.refresh_from_db()

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # the control audit has the engage (with who, why and how it went)

    @admin.action(description="Release the selected stops (nothing is replayed)")
    def release_selected(self, request: HttpRequest, queryset: QuerySet[EmergencyStop]) -> None:
        for stop in queryset.filter(released_at__isnull=True):
            try:
                stops.release(
                    _admin_actor(request), stop_id=stop.pk, reason=f"released in the admin by {request.user}"
                )
            except audit.Refused as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.WARNING)
                continue
            held = stops.held_runs(stop).count()
            self.message_user(request, f"{stop}: released; {held} run(s) wait on its page", messages.SUCCESS)


@admin.register(StopCondition)
class StopConditionAdmin(admin.ModelAdmin):
    """The automatic conditions (scheduler/conditions.py): thresholds, windows and actions."""

    list_display = ["key", "label", "threshold", "window_seconds", "action", "scope", "value", "enabled"]
    list_editable = ["threshold", "window_seconds", "action", "enabled"]
    readonly_fields = ["key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StopCondition | None = None) -> bool:
        return False


from .notifications import admin as notifications_admin  # noqa: E402, F401 - registers its models

# --- schedule triggers (issue 11 §1) ---------------------------------------------------------------
from .triggers import admin as trigger_admin  # noqa: E402 - registers ScheduleAdmin
from .triggers import watch_admin  # noqa: E402, F401 - registers the file watches

trigger_admin.register_inline(JobAdmin)
