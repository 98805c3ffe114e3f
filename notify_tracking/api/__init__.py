"""REST API (djangorestframework, the ``api`` extra)."""
