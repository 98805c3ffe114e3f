"""REST API (djangorestframework, the ``api`` extra): see docs/rest-api.md."""
