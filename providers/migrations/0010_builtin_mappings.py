"""The six built-in mappings of each CRM SyncRoot ships with, as `two_way` (today's behaviour)."""

from django.db import migrations

# Copied, not imported: a migration must keep meaning what it meant when it was written.
BUILTIN_REMOTE_FIELDS = {
    "hubspot": {
        "email": "email", "first_name": "firstname", "last_name": "lastname",
        "phone": "phone", "company": "company", "job_title": "jobtitle",
    },
    "salesforce": {
        "email": "Email", "first_name": "FirstName", "last_name": "LastName",
        "phone": "Phone", "company": "Account.Name", "job_title": "Title",
    },
}  # fmt: skip


def create(apps, schema_editor):
    FieldMapping = apps.get_model("providers", "FieldMapping")
    FieldMapping.objects.bulk_create(
        [
            FieldMapping(provider=provider, field=field, remote_field=remote, rule="two_way")
            for provider, fields in BUILTIN_REMOTE_FIELDS.items()
            for field, remote in fields.items()
        ],
        ignore_conflicts=True,
    )


def remove(apps, schema_editor):
    apps.get_model("providers", "FieldMapping").objects.filter(provider__in=BUILTIN_REMOTE_FIELDS).delete()


class Migration(migrations.Migration):
    dependencies = [("providers", "0009_field_mapping")]

    operations = [migrations.RunPython(create, remove)]
