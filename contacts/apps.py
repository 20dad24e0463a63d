from django.apps import AppConfig


class ContactsConfig(AppConfig):
    name = "contacts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # An index expression may carry an operator class (contact_email_prefix_idx), as
        # django.contrib.postgres allows; that app itself is not installed (nothing else of it is
        # used, and it adds a type lookup to every new database connection).
        from django.contrib.postgres.indexes import OpClass
        from django.db.models import OrderBy
        from django.db.models.functions import Collate
        from django.db.models.indexes import IndexExpression

        IndexExpression.register_wrappers(OrderBy, OpClass, Collate)
