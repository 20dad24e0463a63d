from django.contrib.postgres.operations import RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    # lower(email) lookups are served by contact_email_prefix_idx (text_pattern_ops has `=`): one
    # index less for every contact written. Dropped CONCURRENTLY: writes go on meanwhile.
    atomic = False

    dependencies = [
        ("contacts", "0005_list_and_search_indexes"),
    ]

    operations = [
        RemoveIndexConcurrently(model_name="contact", name="contact_email_ci_idx"),
    ]
