"""Signed billing readings in the gateway's database (X1 §6.2.5–§6.2.6; x1-api.md, Billing).

:class:`BillingStore` works on a :mod:`sqlite3` connection it is handed, next to the
history (:mod:`x1p1.gateway.history`) in the gateway's one database. The billing
readings are the history's own: the electricity meter's quarter-hour rows and the gas
meter's hourly rows (:mod:`x1p1.x1.billing_query`), one row per billing register:

``billing_readings (meter, t, obis, ts, value, unit, signature)``
    keyed ``(meter, t, obis)`` in a ``WITHOUT ROWID`` table, so a period is one range
    scan in the order the response lists it. ``value`` is the register written as it is
    signed (``"012345.678"``), ``signature`` the ECDSA P-256 signature of the canonical
    JSON of ``t``, ``obis``, ``unit`` and ``value`` (:mod:`x1p1.x1.billing`).

Each reading is signed once, when its interval has been recorded
(:meth:`BillingStore.sign_pending`, about 0.1 ms a signature): a request only reads.
What keeps the table honest, in the database itself:

- a reading can only be inserted while the history row it comes from exists
  (trigger ``billing_needs_history``): so never from before a history block (§12.1;
  the block deletes those rows) nor for an interval the gateway did not record (§12.2);
- when a history row goes (pruning at the end of its retention, or a block), its
  billing readings go with it in the same transaction (trigger
  ``billing_follows_history``; under the block's ``secure_delete`` too).

``billing_meta`` remembers the signing certificate's SHA-256. When the PKI issued a new
signer (the old one neared its end), :meth:`BillingStore.adopt_signer` signs every kept
reading again with the new key, so that every response carries one certificate that
verifies all its readings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from x1p1.gateway.billing_signature import BillingSigner
from x1p1.gateway.store import transaction
from x1p1.x1.billing import format_register_value
from x1p1.x1.billing_query import BILLING_OBJECTS, BILLING_RESOLUTION, BillingQuery, register_digits
from x1p1.x1.obis import Meter, ObisObject

log = logging.getLogger("x1p1.gateway.billing")

_BLOCKED = "coalesce((SELECT value FROM history_meta WHERE key = 'blocked'), -1)"
_SOURCE = (
    "CASE {m} WHEN 'electricity' THEN '"
    + BILLING_RESOLUTION[Meter.ELECTRICITY].value
    + "' WHEN 'gas' THEN '"
    + BILLING_RESOLUTION[Meter.GAS].value
    + "' END"
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS billing_readings (
        meter TEXT NOT NULL,
        t INTEGER NOT NULL,
        obis TEXT NOT NULL,
        ts TEXT NOT NULL,
        value TEXT NOT NULL,
        unit TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (meter, t, obis)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS billing_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    f"""CREATE TRIGGER IF NOT EXISTS billing_needs_history BEFORE INSERT ON billing_readings
        WHEN NOT EXISTS (SELECT 1 FROM history_readings WHERE meter = NEW.meter
                         AND resolution = {_SOURCE.format(m="NEW.meter")} AND t = NEW.t)
          OR NEW.t <= {_BLOCKED}
        BEGIN SELECT RAISE(IGNORE); END""",
    f"""CREATE TRIGGER IF NOT EXISTS billing_follows_history AFTER DELETE ON history_readings
        WHEN OLD.resolution = {_SOURCE.format(m="OLD.meter")}
        BEGIN DELETE FROM billing_readings WHERE meter = OLD.meter AND t = OLD.t; END""",
)


def _column(obj: ObisObject) -> str:
    return '"' + obj.code.replace('"', "") + '"'


def certificate_fingerprint(signer: BillingSigner) -> str:
    """SHA-256 of the signing certificate (DER), hex."""
    der = signer.certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class _Register:
    obj: ObisObject
    code: str
    """The concrete code: the gas meter's with its channel."""
    unit: str
    digits: tuple[int, int]


class BillingStore:
    """The signed billing readings of both meters, on a SQLite connection."""

    def __init__(self, conn: sqlite3.Connection, gas_channel: int = 1) -> None:
        self.conn = conn
        self.registers: dict[Meter, tuple[_Register, ...]] = {
            meter: tuple(
                _Register(
                    obj,
                    obj.for_channel(gas_channel) if meter is Meter.GAS else obj.code,
                    obj.unit or "",
                    register_digits(obj),
                )
                for obj in objs
            )
            for meter, objs in BILLING_OBJECTS.items()
        }

    def init_schema(self) -> None:
        """Create the tables and triggers if absent (after the history's schema)."""
        with transaction(self.conn) as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    # --- signing -------------------------------------------------------------------------

    def _unsigned(self, meter: Meter) -> list[tuple[object, ...]]:
        columns = ", ".join(_column(r.obj) for r in self.registers[meter])
        return self.conn.execute(
            f"SELECT t, ts, {columns} FROM history_readings h WHERE meter = ? "
            f"AND resolution = ? AND t > {_BLOCKED} AND NOT EXISTS (SELECT 1 FROM "
            "billing_readings b WHERE b.meter = h.meter AND b.t = h.t) ORDER BY t",
            (meter.value, BILLING_RESOLUTION[meter].value),
        ).fetchall()

    def sign_pending(self, signer: BillingSigner) -> int:
        """Sign every recorded billing interval that has no signed readings yet; returns
        how many readings were stored. Signing happens before the transaction, so the
        write lock is held only for the inserts."""
        rows: list[tuple[str, int, str, str, str, str, str]] = []
        for meter, registers in self.registers.items():
            for t, ts, *values in self._unsigned(meter):
                assert isinstance(t, int) and isinstance(ts, str)
                for register, value in zip(registers, values, strict=True):
                    if not isinstance(value, int | float):
                        continue  # the reading lacks this register
                    try:
                        text = format_register_value(repr(float(value)), *register.digits)
                    except ValueError:  # negative or too wide: no register shows that
                        log.warning(
                            "billing: %s at %s is no register value: %r", register.code, ts, value
                        )
                        continue
                    signature = signer.sign(
                        {"t": ts, "obis": register.code, "value": text, "unit": register.unit}
                    )
                    rows.append((meter.value, t, register.code, ts, text, register.unit, signature))
        if not rows:
            return 0
        with transaction(self.conn) as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO billing_readings VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
            return conn.total_changes - before

    def adopt_signer(self, signer: BillingSigner) -> bool:
        """Make ``signer`` the one every kept reading is signed by: if the readings were
        signed by another certificate, sign them all again (one transaction). Returns
        whether they were re-signed."""
        fingerprint = certificate_fingerprint(signer)
        row = self.conn.execute("SELECT value FROM billing_meta WHERE key = 'signer'").fetchone()
        if row is not None and row[0] == fingerprint:
            return False
        if row is None:  # the first signer: nothing was signed before
            with transaction(self.conn) as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO billing_meta VALUES ('signer', ?)", (fingerprint,)
                )
            return False
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM billing_readings")
            conn.execute(
                "INSERT INTO billing_meta VALUES ('signer', ?) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value",
                (fingerprint,),
            )
            self.sign_pending(signer)  # joins this transaction
        return True

    # --- reading -------------------------------------------------------------------------

    def readings_json(self, q: BillingQuery) -> str:
        """The signed readings of ``q`` as the JSON text of the response's ``readings``,
        written by SQLite: oldest interval first, registers in code order; at most the
        newest Table 8 count of intervals; nothing at or before a history block."""
        where = f"meter = ?1 AND t BETWEEN ?2 AND ?3 AND t > {_BLOCKED}"
        sql = (
            "SELECT json_group_array(json_object('t', ts, 'obis', obis, 'value', value, "
            f"'unit', unit, 'signature', signature)) FROM billing_readings WHERE {where} "
            "AND t >= coalesce((SELECT DISTINCT t FROM billing_readings WHERE "
            f"{where} ORDER BY t DESC LIMIT 1 OFFSET ?4), -1)"
        )
        params = (
            q.meter.value,
            int(q.start.timestamp()),
            int(q.end.timestamp()),
            q.retention.count - 1,
        )
        row = self.conn.execute(sql, params).fetchone()
        return str(row[0]) if row and row[0] is not None else "[]"

    def response_text(self, equipment_id: str, q: BillingQuery, certificate: str) -> str:
        """The whole billing response as JSON text (x1-api.md, Billing): ``equipment_id``,
        ``from``, ``to``, ``certificate`` (PEM) and ``readings``, as
        :class:`~x1p1.x1.billing.BillingResponse` reads it."""
        head = json.dumps(q.response_head(equipment_id, certificate), separators=(",", ":"))
        return head[:-1] + ',"readings":' + self.readings_json(q) + "}"

    def count(self, meter: Meter) -> int:
        """How many signed readings of ``meter`` are kept."""
        row = self.conn.execute(
            "SELECT count(*) FROM billing_readings WHERE meter = ?", (meter.value,)
        ).fetchone()
        return int(row[0])

    def ends(self, meter: Meter) -> Sequence[int]:
        """The interval ends (Unix seconds) with signed readings, oldest first."""
        return [
            int(t)
            for (t,) in self.conn.execute(
                "SELECT DISTINCT t FROM billing_readings WHERE meter = ? ORDER BY t",
                (meter.value,),
            )
        ]
