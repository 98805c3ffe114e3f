"""Signals the app sends.

``delivery_status_changed`` is sent after the transaction that moved a delivery's
status commits, with ``delivery``, ``old_status``, ``new_status`` and ``event`` (the
DeliveryEvent that moved it).
"""

from django.dispatch import Signal

delivery_status_changed = Signal()
