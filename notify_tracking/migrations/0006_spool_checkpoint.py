"""SpoolCheckpoint: how much of a spool file of pixel loads is already moved (OPEN_SPOOL_DIR)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify_tracking', '0005_notification_target_index_only'),
    ]

    operations = [
        migrations.CreateModel(
            name='SpoolCheckpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100, unique=True)),
                ('offset', models.BigIntegerField(default=0)),
            ],
            options={
                'verbose_name': 'spool checkpoint',
                'verbose_name_plural': 'spool checkpoints',
            },
        ),
    ]
