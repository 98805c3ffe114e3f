"""Drop the index of Notification.content_type alone: nt_notif_target (content_type,
object_id) serves the same look-ups, and PostgreSQL, before any ANALYZE, chose the
narrower index for a target's notifications (see the comment on the field).

Reversing it builds that index again with a plain CREATE INDEX, which on PostgreSQL
blocks writes to the notifications table (each notify() writes there) while it runs:
on a large table, reverse it at a quiet time. (The deliveries table's index changes
are all concurrent: _operations.)
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("notify_tracking", "0004_recipient_case_insensitive_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="notification",
            name="content_type",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                to="contenttypes.contenttype",
            ),
        ),
    ]
