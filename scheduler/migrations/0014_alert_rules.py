"""Alert rules (scheduler.alert_rules): one AlertRule row per condition, created after migrate with
the condition's defaults; Alert gains rule, subject, last_seen, count, value, reopened and the
info / critical levels, with one open alert per rule and subject (a partial unique constraint)."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scheduler', '0013_stop_conditions'),
    ]

    operations = [
        migrations.CreateModel(
            name='AlertRule',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.SlugField(max_length=60, unique=True)),
                ('enabled', models.BooleanField(default=True)),
                ('level', models.CharField(choices=[('info', 'Info'), ('warning', 'Warning'), ('error', 'Error'), ('critical', 'Critical')], default='warning', max_length=10)),
                ('threshold', models.FloatField(blank=True, help_text="In the condition's unit (see the list).", null=True)),
                ('window_seconds', models.PositiveIntegerField(default=0, help_text='The period the figure is computed over (0: the state now).')),
                ('min_samples', models.PositiveIntegerField(default=0, help_text='The fewest observations in the window before a ratio counts (0: any).')),
                ('cooldown_seconds', models.PositiveIntegerField(default=300, help_text='After a resolve, a return within this long re-opens it without a notification.')),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['key'],
            },
        ),
        migrations.AddField(
            model_name='alert',
            name='count',
            field=models.PositiveIntegerField(default=1, help_text='Evaluations that saw the condition.'),
        ),
        migrations.AddField(
            model_name='alert',
            name='last_seen',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='alert',
            name='reopened',
            field=models.PositiveIntegerField(default=0, help_text='Times the condition came back within the cooldown (re-opened quietly).'),
        ),
        migrations.AddField(
            model_name='alert',
            name='rule',
            field=models.CharField(blank=True, help_text="The rule's key ('' when no rule raised it).", max_length=60),
        ),
        migrations.AddField(
            model_name='alert',
            name='subject',
            field=models.CharField(blank=True, help_text='What it is about, within its rule.', max_length=200),
        ),
        migrations.AddField(
            model_name='alert',
            name='value',
            field=models.FloatField(blank=True, help_text='The figure when last seen.', null=True),
        ),
        migrations.AlterField(
            model_name='alert',
            name='created_at',
            field=models.DateTimeField(default=django.utils.timezone.now, help_text='First seen.'),
        ),
        migrations.AlterField(
            model_name='alert',
            name='level',
            field=models.CharField(choices=[('info', 'Info'), ('warning', 'Warning'), ('error', 'Error'), ('critical', 'Critical')], default='error', max_length=10),
        ),
        migrations.AddIndex(
            model_name='alert',
            index=models.Index(condition=models.Q(('resolved_at__isnull', True)), fields=['created_at'], name='alert_open'),
        ),
        migrations.AddIndex(
            model_name='alert',
            index=models.Index(fields=['rule', 'subject', 'resolved_at'], name='alert_rule_subject'),
        ),
        migrations.AddConstraint(
            model_name='alert',
            constraint=models.UniqueConstraint(condition=models.Q(('resolved_at__isnull', True), models.Q(('rule', ''), _negated=True)), fields=('rule', 'subject'), name='alert_one_open_per_rule_subject'),
        ),
    ]
