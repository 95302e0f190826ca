"""Pharmacy connectors: one interface (`connectors.base`), one registry of named
implementations (`connectors.registry`), and the connectors themselves (`fhir_r4`,
`vendor_json`). Nothing here imports `app/`: a connector is given plain data and a recorder."""
