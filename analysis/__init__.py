"""analysis: statistics on ratings. Everything but data.py and the Django glue is Django-free."""
