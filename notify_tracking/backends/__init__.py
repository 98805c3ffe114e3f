"""Django email backends of notify_tracking (``notify_tracking.backends.smtp.EmailBackend``)."""
