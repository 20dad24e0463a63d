"""The CRM adapters: the provider interface (`base`), the registry, one shared HTTP call path
(`http`: limiter, token, send, classify, count), the shared rate limiter, and one sub-package per
CRM (`client.py` wire format, `transform.py` fields both ways, `webhook.py` verify and parse,
`provider.py` the interface). Below the sync engine, above the domain: see docs/architecture.md."""
