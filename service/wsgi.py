"""The module-level WSGI app that gunicorn serves."""

from service.app import create_app
from service.db import deadline

# Process-wide: psycopg2's wait callback switches every connection of this process to
# non-blocking mode, which bounds each database wait by the request's deadline. Only the
# serving process opts in (COPY, for one, is unavailable in that mode).
deadline.install()
app = create_app()
