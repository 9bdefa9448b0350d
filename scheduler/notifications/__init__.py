"""Notifications (issue 10 §5): channels, the record of each event and its deliveries, the
senders and the delivery loop. The interface every part calls is :mod:`scheduler.notify`."""
