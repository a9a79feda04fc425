"""Every table of every context, so Alembic and the tests see one metadata."""

from sqlmodel import SQLModel

from broker.events import models as events
from broker.partners import models as partners
from broker.schools import models as schools

metadata = SQLModel.metadata

__all__ = ["events", "metadata", "partners", "schools"]
