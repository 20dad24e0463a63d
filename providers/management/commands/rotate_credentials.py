"""`manage.py rotate_credentials`: re-encrypt stored CRM credentials under the newest key."""

from django.core.management.base import BaseCommand

from providers.connections import connections_rotate_credentials


class Command(BaseCommand):
    help = (
        "Re-encrypt every connection's stored credentials under the first key of CREDENTIALS_KEYS; "
        "run it after putting a new key first, then drop the old key."
    )

    def handle(self, *args, **options) -> None:
        count = connections_rotate_credentials()
        self.stdout.write(f"{count} connection(s) re-encrypted under the newest key.")
