"""Gateway tokens encrypted at rest (agentflow.lib.crypto, keys from AGENTFLOW_ENCRYPTION_KEYS).

Forwards: the column becomes a text column and every plain token is encrypted with the first
key. Backwards (``migrate fleet 0001``): every token is decrypted back to plain text first, then
the column is a 500-character one again, as the previous release expects.

The rows are read and written with plain SQL on the column, not through the field, so the
migration sees exactly what is stored (plain or ``fernet:...``).
"""

from django.db import migrations, models

import agentflow.lib.fields
from agentflow.lib import crypto


def _rewrite(schema_editor, convert):
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    table, column = quote("dashboard_gateway"), quote("token")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {column} FROM {table}")
        rows = cursor.fetchall()
        for pk, stored in rows:
            new = convert(stored or "")
            if new != (stored or ""):
                cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [new, pk])


def encrypt_tokens(apps, schema_editor):
    _rewrite(schema_editor, lambda v: v if crypto.is_encrypted(v) else crypto.encrypt(v))


def decrypt_tokens(apps, schema_editor):
    _rewrite(schema_editor, crypto.decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="gateway",
            name="token",
            field=agentflow.lib.fields.EncryptedTextField(blank=True),
        ),
        migrations.RunPython(encrypt_tokens, decrypt_tokens, elidable=False),
    ]
