"""Where the key-encryption key comes from, per deployment."""

from __future__ import annotations

from broker.settings import Settings, SettingsError
from cache.keys import KeyConfigError, KeyProvider, LocalKeyProvider


def load_key_provider(settings: Settings) -> KeyProvider:
    """The KEK from MISBROKER_KEK, else the key file; development creates that file once."""
    try:
        if settings.cache.kek is not None:
            return LocalKeyProvider.from_env_secret(settings.cache.kek.get_secret_value())
        path = settings.kek_file
        if not path.exists():
            if settings.production:
                raise SettingsError(f"key file {path} does not exist")
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return LocalKeyProvider.generate_file(path)
        return LocalKeyProvider.from_file(path)
    except KeyConfigError as exc:
        raise SettingsError(f"key-encryption key: {exc}") from exc
