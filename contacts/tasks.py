from celery import shared_task

from contacts import services


@shared_task(name="contacts.tasks.expire_idempotency_keys")
def expire_idempotency_keys() -> None:
    services.idempotency_keys_expire()
