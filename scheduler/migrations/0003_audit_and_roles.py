"""The control audit (AuditEntry) and the three roles, as groups holding the engine's permissions.

The permissions are created here explicitly rather than left to post_migrate, so the groups can
hold them in the same migration (post_migrate runs after every migration, too late for that).
The role table is frozen below: scheduler.roles may change later, this migration may not.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


PERMISSIONS = {
    "operate": "Operate: send chats, abort runs, run batches now",
    "administer": "Administer: audit log, API tokens, emergency stop",
    "view_auditentry": "Can view audit entry",
}
GROUPS = {
    "viewer": [],
    "operator": ["operate"],
    "admin": ["operate", "administer", "view_auditentry"],
}


def create_roles(apps, schema_editor):
    db = schema_editor.connection.alias
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.using(db).get_or_create(app_label="scheduler", model="auditentry")
    perms = {
        codename: Permission.objects.using(db).get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )[0]
        for codename, name in PERMISSIONS.items()
    }
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.using(db).get_or_create(name=name)
        group.permissions.add(*(perms[c] for c in codenames))


def remove_roles(apps, schema_editor):
    db = schema_editor.connection.alias
    apps.get_model("auth", "Group").objects.using(db).filter(name__in=GROUPS).delete()
    apps.get_model("auth", "Permission").objects.using(db).filter(
        content_type__app_label="scheduler", content_type__model="auditentry"
    ).delete()
    apps.get_model("contenttypes", "ContentType").objects.using(db).filter(
        app_label="scheduler", model="auditentry"
    ).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('scheduler', '0002_batch_registry_and_alert'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('actor_label', models.CharField(help_text='Who, as shown: a username, "api token \'ops\' (alice)", \'system\'.', max_length=200)),
                ('action', models.CharField(help_text='What, as noun.verb: chat.send, chat.abort.', max_length=60)),
                ('target_type', models.CharField(blank=True, max_length=40)),
                ('target_id', models.CharField(blank=True, max_length=255)),
                ('target_label', models.CharField(blank=True, max_length=300)),
                ('reason', models.TextField(blank=True, help_text="Why, in the actor's words (optional).")),
                ('result', models.CharField(choices=[('ok', 'OK'), ('refused', 'Refused'), ('error', 'Error')], max_length=10)),
                ('message', models.TextField(blank=True, help_text='The refusal or error, as the actor was told.')),
                ('source', models.CharField(blank=True, help_text='web, api, websocket, admin, command…', max_length=60)),
                ('ip_address', models.GenericIPAddressField(blank=True, null=True)),
                ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='audit_entries', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name_plural': 'audit entries',
                'ordering': ['-created_at', '-id'],
                'permissions': [('operate', 'Operate: send chats, abort runs, run batches now'), ('administer', 'Administer: audit log, API tokens, emergency stop')],
                'indexes': [models.Index(fields=['-created_at'], name='audit_time'), models.Index(fields=['action', '-created_at'], name='audit_action_time'), models.Index(fields=['target_type', 'target_id'], name='audit_target')],
            },
        ),
        migrations.RunPython(create_roles, remove_roles),
    ]
