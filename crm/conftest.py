"""The adapters' tests run without the sync engine: no custom field is mapped unless a test maps one."""

import pytest

from crm import base


@pytest.fixture(autouse=True)
def _no_mapped_custom_fields():
    installed = base._extra_fields
    base.extra_fields_source(lambda name: ())
    yield
    base.extra_fields_source(installed)
