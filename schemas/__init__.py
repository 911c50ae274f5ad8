"""Contracts of the project: the WMS source DDL, the ClickHouse DDL, the change-event models."""

from importlib.resources import files

#: The regional WMS schema, byte-identical to ../shared/wms/schema.sql (a test checks it).
WMS_SCHEMA_SQL: str = files(__package__).joinpath("wms/schema.sql").read_text()
