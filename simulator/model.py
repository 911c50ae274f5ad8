"""Vocabulary of the WMS (statuses, location types, ledger types) as lookup tables."""

from __future__ import annotations

from typing import Final

#: Location types and whether stock there can be promised to orders.
SELLABLE_BY_LOC_TYPE: Final[dict[str, bool]] = {
    "STORAGE": True,
    "PICK": True,
    "RECEIVING": False,
    "QC": False,
    "DAMAGE": False,
    "RETURNS": False,
    "STAGING": False,
}

#: Zone code used for each location type.
ZONE_BY_LOC_TYPE: Final[dict[str, str]] = {
    "STORAGE": "S",
    "PICK": "P",
    "RECEIVING": "RCV",
    "QC": "QC",
    "DAMAGE": "DMG",
    "RETURNS": "RET",
    "STAGING": "STG",
}

INVENTORY_STATUSES: Final[tuple[str, ...]] = (
    "AVAILABLE",
    "PENDING_PUTAWAY",
    "QC_HOLD",
    "FROZEN",
    "DAMAGED",
    "RETURNED",
    "EXPIRED",
)

#: Serial status expected for a unit, by the status of its balance row (unallocated part).
SERIAL_STATUS_BY_INVENTORY_STATUS: Final[dict[str, str]] = {
    "AVAILABLE": "IN_STOCK",
    "PENDING_PUTAWAY": "IN_STOCK",
    "QC_HOLD": "IN_STOCK",
    "FROZEN": "IN_STOCK",
    "EXPIRED": "IN_STOCK",
    "DAMAGED": "DAMAGED",
    "RETURNED": "RETURNED",
}

#: Inbound order statuses whose open quantity counts as inbound_expected.
INBOUND_OPEN_STATUSES: Final[tuple[str, ...]] = ("CREATED", "IN_TRANSIT", "ARRIVED", "RECEIVING")

#: Ledger type of a shipment, by outbound order type.
SHIP_TXN_BY_ORDER_TYPE: Final[dict[str, str]] = {
    "B2C": "SHIP",
    "B2B": "SHIP",
    "DISPOSAL": "SHIP",
    "TRANSFER": "TRANSFER_OUT",
}

#: Ledger type of a receipt, by inbound order type.
RECEIVE_TXN_BY_ORDER_TYPE: Final[dict[str, str]] = {
    "PURCHASE": "RECEIVE",
    "TRANSFER": "TRANSFER_IN",
    "RETURN": "RETURN",
}

TRACKINGS: Final[tuple[str, ...]] = ("NONE", "LOT", "SERIAL")
LOT_RULES: Final[tuple[str, ...]] = ("FEFO", "FIFO", "SPECIFIED")
