"""HubSpot CRM (v3 contacts API) for SyncRoot.

`provider.HubSpotProvider` implements `crm.base.Provider`; `client.HubSpotClient` speaks the
wire format (auth, shared rate limits, batches, search, error classes); `transform` maps fields
and times (pure); `webhook` verifies v3 signatures and splits deliveries into events.
"""
