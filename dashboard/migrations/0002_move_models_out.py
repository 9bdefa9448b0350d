"""The fleet models go to the ``fleet`` app and Alert to the engine (``scheduler``).

State only (their tables stay, with their names: fleet 0001 and scheduler 0002 adopt them),
plus the content types renamed, so permissions granted on them and admin log entries about
them follow the models to their new apps.
"""

from django.db import migrations

MOVED = {
    "gateway": "fleet",
    "agent": "fleet",
    "agentsession": "fleet",
    "confighistory": "fleet",
    "chathistory": "fleet",
    "healthsample": "fleet",
    "alert": "scheduler",
}


def rename_content_types(apps, schema_editor, forward=True):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model, new_app in MOVED.items():
        old_label, new_label = ("dashboard", new_app) if forward else (new_app, "dashboard")
        old = ContentType.objects.using(db).filter(app_label=old_label, model=model).first()
        if old is None:
            continue  # a fresh database: post_migrate creates the new ones
        # A content type already made for the new label (a migrate that stopped half-way) would
        # block the rename; it can hold nothing the old one does not, so it goes.
        ContentType.objects.using(db).filter(app_label=new_label, model=model).delete()
        old.app_label = new_label
        old.save(update_fields=["app_label"])


def rename_back(apps, schema_editor):
    rename_content_types(apps, schema_editor, forward=False)


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("dashboard", "0001_initial"),
        ("fleet", "0001_initial"),
        ("scheduler", "0002_batch_registry_and_alert"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(name="AgentSession"),
                migrations.DeleteModel(name="Agent"),
                migrations.DeleteModel(name="ChatHistory"),
                migrations.DeleteModel(name="ConfigHistory"),
                migrations.DeleteModel(name="HealthSample"),
                migrations.DeleteModel(name="Gateway"),
                migrations.DeleteModel(name="Alert"),
            ],
        ),
        migrations.RunPython(rename_content_types, rename_back),
    ]
