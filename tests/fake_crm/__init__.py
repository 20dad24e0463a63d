"""A third CRM, as small as the provider interface allows: an in-memory record store behind it.

It is registered the way every CRM is (one sub-package, one registry line) by the test that uses
it, which then runs it through the real engine: that is the proof that adding a CRM needs nothing
more.
"""
