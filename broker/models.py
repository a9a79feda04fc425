"""Every table of every context, so Alembic and the tests see one metadata."""

from sqlmodel import SQLModel

from broker.agenthub import models as agenthub
from broker.events import models as events
from broker.partners import models as partners
from broker.schools import models as schools

metadata = SQLModel.metadata

__all__ = ["agenthub", "events", "metadata", "partners", "schools"]
