"""Django's SQLite backend with a writer lock that hands over at once (see ``base``)."""
