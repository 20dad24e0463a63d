import factory

from contacts.models import Contact


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    phone = factory.Faker("numerify", text="+1 555 ### ####")
    company = factory.Faker("company")
    job_title = factory.Faker("job", locale="en_US")
