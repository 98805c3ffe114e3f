"""The search by recipient address in any case (``recipient__iexact``/``__istartswith``).

One index on ``UPPER(recipient)`` replaces the two case-sensitive ones (exact, and
``varchar_pattern_ops`` for the prefix). On PostgreSQL it is built with the
``text_pattern_ops`` operator class, which serves both ``=`` and ``LIKE 'ABC%'``
under any collation (an ordinary b-tree serves ``LIKE`` only under the ``C``
collation). Django's ``OpClass`` needs ``django.contrib.postgres`` in
INSTALLED_APPS and cannot be written in a model that must also run on SQLite, so the
model declares the portable ``Index(Upper("recipient"))`` and this migration adds the
operator class on PostgreSQL; the index has the same name and expression everywhere.

On PostgreSQL the indexes are built and dropped ``CONCURRENTLY``, forwards and
backwards (hence ``atomic = False``; see ``_operations``): the deliveries table is the
hot one, and a plain CREATE INDEX would block sending for as long as the build takes
on a large table. If the build is interrupted, PostgreSQL leaves an invalid index:
drop it (``DROP INDEX CONCURRENTLY nt_deliv_recipient_upper``) and migrate again.
"""

from django.db import migrations, models
from django.db.models.functions import Upper

from ._operations import AddIndexConcurrently, RemoveIndexConcurrently, postgresql

INDEX = "nt_deliv_recipient_upper"


class AddUpperRecipientIndex(AddIndexConcurrently):
    """AddIndex; on PostgreSQL with ``text_pattern_ops``, built (and dropped backwards)
    concurrently."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if not postgresql(schema_editor):
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return None
        quote = schema_editor.quote_name
        column = model._meta.get_field("recipient").column
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY {quote(self.index.name)} "
            f"ON {quote(model._meta.db_table)} ((UPPER({quote(column)})) text_pattern_ops)"
        )
        return None


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notify_tracking", "0003_pending_open"),
    ]

    operations = [
        AddUpperRecipientIndex(
            model_name="delivery",
            index=models.Index(Upper("recipient"), name=INDEX),
        ),
        RemoveIndexConcurrently(model_name="delivery", name="nt_deliv_recipient"),
        RemoveIndexConcurrently(model_name="delivery", name="nt_deliv_recipient_prefix"),
    ]
