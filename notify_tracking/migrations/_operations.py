"""Index operations that do not block writes on PostgreSQL, for the app's migrations.

The deliveries table is the hot one: a plain CREATE INDEX (or DROP INDEX) locks its
writes, and so sending, for as long as the build takes on a large table. On
PostgreSQL these build and drop ``CONCURRENTLY``, forwards and backwards, so a
migration using them needs ``atomic = False``; elsewhere they are Django's own. If a
build is interrupted, PostgreSQL leaves an invalid index: drop it (``DROP INDEX
CONCURRENTLY <name>``) and migrate again.

(The migration loader skips modules whose name starts with "_".)
"""

from django.db import migrations


def postgresql(schema_editor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


def drop_concurrently(schema_editor, name: str) -> None:
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")


class AddIndexConcurrently(migrations.AddIndex):
    """AddIndex; on PostgreSQL built, and dropped backwards, concurrently."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if not postgresql(schema_editor):
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)
        return None

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if not postgresql(schema_editor):
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            drop_concurrently(schema_editor, self.index.name)
        return None


class RemoveIndexConcurrently(migrations.RemoveIndex):
    """RemoveIndex; on PostgreSQL dropped (if it exists), and built again backwards,
    concurrently."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if not postgresql(schema_editor):
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            drop_concurrently(schema_editor, self.name)
        return None

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if not postgresql(schema_editor):
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            schema_editor.add_index(model, index, concurrently=True)
        return None
