"""django-notify-tracking: per-recipient delivery and read status for notifications."""

__version__ = "0.1.0.dev0"

__all__ = ["Recipient", "notify", "record_event", "summaries", "summary"]


def __getattr__(name: str):
    # Lazy, so that importing the package does not need Django's app registry.
    if name in ("Recipient", "notify", "record_event"):
        from . import service

        return getattr(service, name)
    if name in ("summary", "summaries"):
        from . import aggregate

        return getattr(aggregate, name)
    raise AttributeError(f"module 'notify_tracking' has no attribute {name!r}")
