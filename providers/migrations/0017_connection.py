"""CRM connections become data: the state row of each CRM grows into its connection (key, CRM,
account, credentials), so a deployment keeps its state and env-configured CRMs keep their keys."""

import django.utils.timezone
from django.db import migrations, models


def crm_of_each_key(apps, schema_editor):
    # Every connection so far was configured from the environment under its CRM's own name.
    apps.get_model("providers", "Connection").objects.update(provider=models.F("key"))


class Migration(migrations.Migration):
    dependencies = [
        ("providers", "0016_dead_letter_created_idx"),
    ]

    operations = [
        # The admin page's proxy follows its base under the new name (a proxy holds no table).
        migrations.DeleteModel(name="SyncHealth"),
        migrations.RenameModel(old_name="CrmState", new_name="Connection"),
        migrations.CreateModel(
            name="SyncHealth",
            fields=[],
            options={"verbose_name": "Sync health", "verbose_name_plural": "Sync health", "proxy": True},
            bases=("providers.connection",),
        ),
        migrations.RenameField(model_name="connection", old_name="provider", new_name="key"),
        migrations.AlterField(
            model_name="connection", name="key", field=models.SlugField(max_length=32, unique=True)
        ),
        migrations.AddField(
            model_name="connection", name="provider", field=models.CharField(default="", max_length=32), preserve_default=False
        ),
        migrations.RunPython(crm_of_each_key, migrations.RunPython.noop, elidable=True),
        migrations.AddField(
            model_name="connection", name="name", field=models.CharField(blank=True, default="", max_length=100)
        ),
        migrations.AddField(
            model_name="connection", name="account_id", field=models.CharField(blank=True, default="", max_length=64)
        ),
        migrations.AddField(
            model_name="connection", name="instance_url", field=models.URLField(blank=True, default="", max_length=255)
        ),
        migrations.AddField(
            model_name="connection",
            name="source",
            field=models.CharField(
                choices=[("environment", "Environment"), ("api", "Api"), ("oauth", "Oauth")],
                default="environment",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="connection", name="credentials", field=models.TextField(blank=True, default="", editable=False)
        ),
        migrations.AddField(
            model_name="connection", name="created_at", field=models.DateTimeField(default=django.utils.timezone.now)
        ),
        migrations.AddField(model_name="connection", name="updated_at", field=models.DateTimeField(auto_now=True)),
        migrations.AddField(model_name="connection", name="deleted_at", field=models.DateTimeField(blank=True, null=True)),
        migrations.AlterField(
            model_name="connection",
            name="status",
            field=models.CharField(
                choices=[("active", "Active"), ("paused", "Paused"), ("auth_failed", "Auth Failed"), ("disabled", "Disabled")],
                default="active",
                max_length=16,
            ),
        ),
        migrations.AlterModelOptions(name="connection", options={"ordering": ("key",), "verbose_name": "CRM connection"}),
        migrations.AddConstraint(
            model_name="connection",
            constraint=models.UniqueConstraint(
                condition=models.Q(("deleted_at__isnull", True), models.Q(("account_id", ""), _negated=True)),
                fields=("provider", "account_id"),
                name="connection_account_unique",
            ),
        ),
    ]
