"""The activity log for support staff, the CSV export, and per-user preferences.

- :mod:`.filters`: the search parameters, parsed once for the API, the CSV export,
  the admin page and the ``notify_tracking_status`` command;
- :mod:`.api_views`, :mod:`.serializers`: the log and each delivery's event timeline
  (REST, when djangorestframework is installed), and the preferences endpoint;
- :mod:`.export`: the streaming CSV export; :mod:`.views`: its view and the
  preferences form;
- :mod:`.admin_views`: the log as a page of the Django admin.
"""
