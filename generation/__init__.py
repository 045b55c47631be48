"""generation: stimulus clips for MOS studies.

The Django app (models, admin, tasks, services) sits beside a Django-free core (corpus, controls,
media, faces, nets/, metrics/) that can be used and tested without a database.
"""
