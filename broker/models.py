"""Every table of every context, so Alembic and the tests see one metadata."""

from sqlmodel import SQLModel

from broker.admin import models as admin
from broker.agenthub import models as agenthub
from broker.console import models as console  # noqa: F401 - console sessions, invitations
from broker.events import models as events
from broker.partners import models as partners
from broker.schools import models as schools
from broker.webhooks import models as webhooks  # noqa: F401 - webhook deliveries
from broker.writes import models as writes  # noqa: F401 - partner writes (write-back)
from cache import models as cache_models  # noqa: F401 - the cache's tables
from consent import models as consent_models  # noqa: F401 - consents, access log, audit

metadata = SQLModel.metadata

__all__ = ["admin", "agenthub", "events", "metadata", "partners", "schools"]
