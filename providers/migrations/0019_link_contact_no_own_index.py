import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # Lookups by contact are served by link_contact_provider_unique (contact, provider): the
    # foreign key's own index was one more to write for every link.

    dependencies = [
        ("providers", "0018_api_budgets"),
    ]

    operations = [
        migrations.AlterField(
            model_name="providerlink",
            name="contact",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="links",
                to="contacts.contact",
            ),
        ),
    ]
