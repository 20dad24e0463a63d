from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('providers', '0005_dead_letter_resolved_idx'),
    ]

    operations = [
        migrations.AddField(
            model_name='providerlink',
            name='claimed_by',
            field=models.IntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='providerlink',
            name='claimed_until',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
