"""The engine stops pointing at the fleet, and takes over the dashboard's Alert.

* ``BatchRun.gateway`` (a foreign key up into a domain app) becomes ``scope`` / ``target_id`` /
  ``target_name``, copied from the old column and the gateway's name, so no run loses its
  gateway; ``batch`` becomes a plain registry key (no choices: a new batch needs no migration).
* ``Alert`` moves from ``dashboard`` into the engine, state only: its table keeps its name.

Migrating back (``migrate scheduler 0001``, after ``migrate fleet zero``) restores the
``gateway`` column from ``target_id`` and drops the ``scheduler.alert`` content type that
post_migrate made while the backwards path passed through a state holding both Alerts.
"""

import django.utils.timezone
from django.db import migrations, models


# One UPDATE per gateway. ``order_by()`` matters: with the model's ordering (-started_at) the
# DISTINCT would be over (gateway, started_at), one "distinct" id per run, and the loop would
# rewrite a gateway's runs once per run (quadratic on a table holding weeks of runs).


def copy_gateways(apps, schema_editor):
    db = schema_editor.connection.alias
    BatchRun = apps.get_model("scheduler", "BatchRun")
    Gateway = apps.get_model("dashboard", "Gateway")
    names = dict(Gateway.objects.using(db).values_list("pk", "name"))
    runs = BatchRun.objects.using(db)
    for gateway_id in runs.exclude(gateway=None).order_by().values_list("gateway_id", flat=True).distinct():
        runs.filter(gateway_id=gateway_id).update(
            scope="gateway", target_id=gateway_id, target_name=names.get(gateway_id, "")[:200]
        )


def copy_back(apps, schema_editor):
    db = schema_editor.connection.alias
    BatchRun = apps.get_model("scheduler", "BatchRun")
    Gateway = apps.get_model("dashboard", "Gateway")
    known = set(Gateway.objects.using(db).values_list("pk", flat=True))
    runs = BatchRun.objects.using(db).filter(scope="gateway")
    for target_id in runs.order_by().values_list("target_id", flat=True).distinct():
        if target_id in known:
            runs.filter(target_id=target_id).update(gateway_id=target_id)


def drop_copied_alert_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    # Only a copy goes: dashboard 0002 renamed the real one (with its permissions and log
    # entries) back to "dashboard" before this runs.
    if ContentType.objects.using(db).filter(app_label="dashboard", model="alert").exists():
        ContentType.objects.using(db).filter(app_label="scheduler", model="alert").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("scheduler", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="batchrun",
            name="scope",
            field=models.CharField(
                blank=True, help_text="What the batch ran for: '' (global) or a scope name.", max_length=40
            ),
        ),
        migrations.AddField(
            model_name="batchrun",
            name="target_id",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="batchrun",
            name="target_name",
            field=models.CharField(blank=True, help_text="The target's name when it ran.", max_length=200),
        ),
        migrations.RunPython(copy_gateways, copy_back, elidable=False),
        migrations.RemoveField(
            model_name="batchrun",
            name="gateway",
        ),
        migrations.AlterField(
            model_name="batchrun",
            name="batch",
            field=models.CharField(max_length=50),
        ),
        migrations.AddIndex(
            model_name="batchrun",
            index=models.Index(fields=["scope", "target_id"], name="batchrun_target"),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Alert",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "level",
                            models.CharField(
                                choices=[("warning", "Warning"), ("error", "Error")], default="error", max_length=10
                            ),
                        ),
                        ("source", models.CharField(max_length=50)),
                        ("message", models.TextField()),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("resolved_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "dashboard_alert",
                        "ordering": ["-created_at"],
                    },
                ),
            ],
        ),
        migrations.RunPython(migrations.RunPython.noop, drop_copied_alert_content_type, elidable=False),
    ]
