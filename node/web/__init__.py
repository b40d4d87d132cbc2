"""The staff web pages (Chinese): sign-in, landing pages by role, accounts, cases.

* ``auth``: passwords (Argon2id), server-side sessions, CSRF, lock-out, roles;
* ``pages``: the routes, added to the node's app by ``add_web_routes``;
* ``render``: the base layout's context and the error page;
* ``templates/`` (Jinja2) and ``static/`` (plain CSS and ES modules, no bundler).
"""

from node.web.pages import add_web_routes

__all__ = ["add_web_routes"]
