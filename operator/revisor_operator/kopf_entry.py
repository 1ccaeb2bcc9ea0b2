"""The module ``kopf run -m revisor_operator.kopf_entry`` loads.

``revisor-operator`` (:mod:`.main`) registers the handlers itself, with the
settings its flags give. Running kopf directly — ``kopf run`` or
``kopf.testing.KopfRunner`` in the tests — goes through here instead: the
settings come from the environment, read once, and the handlers join kopf's
default registry.
"""

from __future__ import annotations

import kopf

from .handlers import register
from .settings import Settings

SETTINGS = Settings.from_env()
register(kopf.get_default_registry(), SETTINGS)
