from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ProvidersConfig(AppConfig):
    name = "providers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from contacts.fields import FIELD_USERS
        from contacts.models import CustomField
        from crm.base import extra_fields_source
        from crm.registry import connection_source
        from providers.connections import connection_specs
        from providers.mappings import extra_fields, mapping_uses, mappings_changed

        # The CRM accounts SyncRoot syncs with are rows (and the environment's first ones).
        connection_source(connection_specs)
        # The adapters read exactly the mapped custom fields; a custom field in use is not deleted;
        # a custom field's edited definition (options, max_length) reaches every process's rules.
        extra_fields_source(extra_fields)
        FIELD_USERS.append(mapping_uses)
        post_save.connect(mappings_changed, sender=CustomField, dispatch_uid="mappings-field-saved")
        post_delete.connect(mappings_changed, sender=CustomField, dispatch_uid="mappings-field-deleted")
