"""Routes of the app. Mount with ``path("notify/", include("notify_tracking.urls"))``.

Names live in the ``notify_tracking`` namespace: ``open``, ``click``, ``download``
(tracking, :mod:`notify_tracking.tracking.urls`) and ``api-status``,
``api-status-list`` (REST, :mod:`notify_tracking.api.urls`, when
djangorestframework is installed).
"""

from importlib.util import find_spec

from .tracking.urls import urlpatterns as tracking_urlpatterns

app_name = "notify_tracking"

urlpatterns = [*tracking_urlpatterns]

if find_spec("rest_framework") is not None:
    from .api.urls import urlpatterns as api_urlpatterns

    urlpatterns += api_urlpatterns
