"""Connectors by name: a new vendor is one module decorated with `@register("name")` plus its
configuration. `get_connector` imports the built-in modules on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from connectors.base import Connector, ConnectorError, PharmacyConfig, Recorder

__all__ = ["Recorder", "get_connector", "names", "register", "unregister"]

ConnectorFactory = Callable[[PharmacyConfig, Recorder], Connector]

_BUILT_IN = ("connectors.fhir_r4", "connectors.vendor_json")
_registry: dict[str, ConnectorFactory] = {}


def register(name: str) -> Callable[[ConnectorFactory], ConnectorFactory]:
    def decorate(factory: ConnectorFactory) -> ConnectorFactory:
        existing = _registry.get(name)
        if existing is not None and existing is not factory:
            raise ValueError(f"a connector named {name!r} is already registered")
        _registry[name] = factory
        return factory

    return decorate


def unregister(name: str) -> None:
    _registry.pop(name, None)


def _load_built_in() -> None:
    for module in _BUILT_IN:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a real import error inside the module
                raise


def names() -> list[str]:
    _load_built_in()
    return sorted(_registry)


def get_connector(config: PharmacyConfig, recorder: Recorder) -> Connector:
    _load_built_in()
    factory = _registry.get(config.connector)
    if factory is None:
        raise ConnectorError(f"unknown connector {config.connector!r}")
    return factory(config, recorder)
