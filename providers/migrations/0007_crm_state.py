import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('providers', '0006_link_claim'),
    ]

    operations = [
        migrations.CreateModel(
            name='CrmState',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('provider', models.CharField(max_length=32, unique=True)),
                ('status', models.CharField(choices=[('active', 'Active'), ('auth_failed', 'Auth Failed')], default='active', max_length=16)),
                ('since', models.DateTimeField(default=django.utils.timezone.now)),
                ('last_error', models.TextField(blank=True, default='')),
                ('last_probe_at', models.DateTimeField(blank=True, null=True)),
                ('next_probe_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'verbose_name': 'CRM connection',
            },
        ),
    ]
