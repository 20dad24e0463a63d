import factory
from django.utils import timezone

from contacts.models import ApiToken, Contact, CustomField, FieldType


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    phone = factory.Faker("numerify", text="+1 555 ### ####")
    company = factory.Faker("company")
    job_title = factory.Faker("job", locale="en_US")

    class Params:
        # A soft-deleted contact: the tombstone the API no longer shows.
        deleted = factory.Trait(deleted_at=factory.LazyFunction(timezone.now))


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """A token made the way the product makes them; the raw value is on `.raw` (it is stored hashed)."""

    class Meta:
        model = ApiToken

    name = factory.Sequence(lambda n: f"client-{n}")
    is_active = True

    @classmethod
    def _create(cls, model_class, *args, name: str, is_active: bool = True, **kwargs) -> ApiToken:
        token, raw = model_class.generate(name=name, is_active=is_active)
        token.raw = raw
        return token


class CustomFieldFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CustomField
        django_get_or_create = ("key",)

    key = factory.Sequence(lambda n: f"field_{n}")
    label = factory.LazyAttribute(lambda field: field.key.replace("_", " ").capitalize())
    type = FieldType.STRING
    options = factory.LazyAttribute(lambda field: ["gold", "silver"] if field.type == FieldType.ENUM else [])
    max_length = factory.LazyAttribute(lambda field: 255 if field.type == FieldType.STRING else None)
