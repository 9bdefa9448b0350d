# The queue page's counts per priority x state and its arrivals, from the index alone.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scheduler', '0006_run_window_indexes'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['status', 'priority', 'queued_at'], name='run_state_queued'),
        ),
    ]
