"""Tables of the cache context: wrapped data keys, cached areas and their encrypted records.

Nothing here holds personal data in clear.  Record ids are stored only as a keyed digest
(`record_key`, an HMAC under a key derived from the school's data key), the record itself
(id included) only sealed; school ids and area names are the broker's own identifiers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Table
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class CacheTier(StrEnum):
    WARM = "warm"  # records live in `cached_records`
    COLD = "cold"  # records live in one sealed bundle in the blob store


class DataKey(SQLModel, table=True):
    """A school's data key, wrapped by a KEK; never stored unwrapped."""

    __tablename__ = "data_keys"

    school_id: str = Field(primary_key=True, max_length=256)
    version: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    kek_id: str = Field(max_length=64, index=True)
    wrapped: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class ShreddedSchool(SQLModel, table=True):
    """Tombstone of a school whose data keys were destroyed: it never gets a key again."""

    __tablename__ = "shredded_schools"

    school_id: str = Field(primary_key=True, max_length=256)
    shredded_at: datetime = Field(sa_type=UTCDateTime)


class CachedArea(SQLModel, table=True):
    """One area of one school: freshness, tier, change counters, and use.

    A row with `as_of` null records that a partner asked for an area not yet cached.
    """

    __tablename__ = "cached_areas"
    __table_args__ = (
        # Purge finds expired areas, and refresh stale ones, through this index alone.
        Index("ix_cached_areas_purge_after", "purge_after"),
    )

    school_id: str = Field(primary_key=True, max_length=256)
    area: str = Field(primary_key=True, max_length=64)
    as_of: datetime | None = Field(default=None, sa_type=UTCDateTime)
    purge_after: datetime | None = Field(default=None, sa_type=UTCDateTime)
    tier: CacheTier = Field(default=CacheTier.WARM, sa_type=enum_column(CacheTier))
    data_version: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    record_count: int = 0
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    last_read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    refresh_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cold_blob_key: str | None = Field(default=None, max_length=200)


class CachedRecord(SQLModel, table=True):
    """One record (or its tombstone) of a warm area, sealed for its slot."""

    __tablename__ = "cached_records"
    __table_args__ = (Index("ix_cached_records_seq", "school_id", "area", "seq", unique=True),)

    school_id: str = Field(primary_key=True, max_length=256)
    area: str = Field(primary_key=True, max_length=64)
    record_key: str = Field(primary_key=True, max_length=64)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    changed_at: datetime = Field(sa_type=UTCDateTime)
    deleted: bool = False
    as_of: datetime = Field(sa_type=UTCDateTime)
    content_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    blob_key: str | None = Field(default=None, max_length=200)


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a model: the cache's hot paths use Core, not ORM objects."""
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


data_keys = table_of(DataKey)
shredded_schools = table_of(ShreddedSchool)
cached_areas = table_of(CachedArea)
cached_records = table_of(CachedRecord)
