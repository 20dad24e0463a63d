from django.core.management.base import BaseCommand, CommandParser

from contacts.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token; the token itself is the last line printed (it is stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Who or what the token is for, e.g. a client app's name.")
        parser.add_argument(
            "--replace", action="store_true", help="Revoke the other active tokens with this name first."
        )

    def handle(self, *args, name: str, replace: bool, **options) -> None:
        if replace:
            revoked = ApiToken.objects.filter(name=name, is_active=True).update(is_active=False)
            if revoked:
                self.stdout.write(f"Revoked {revoked} earlier token(s) named {name!r}.")
        token, raw = ApiToken.generate(name=name)
        self.stdout.write(f"Created API token {token.prefix}… for {name!r}. Use it as 'Authorization: Bearer <token>':")
        self.stdout.write(raw)
