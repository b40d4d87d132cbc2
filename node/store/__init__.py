"""SQLite: every SQL statement of the project is in this package.

* ``cases``: the node's database of cases, receipts, envelopes, outbox, timers
  (durable, group-committed; see its docstring);
* ``catalog``: the index of the circle's matter catalogs, with Chinese search
  (rebuildable from the catalog bucket, so kept in a file of its own);
* ``accounts``: staff accounts, sessions and the audit of administrative actions
  (``accounts.db``: who may use the pages, kept apart from the cases);
* ``video``: virtual-window sessions and who did what in them (``video.db``);
* ``base``: opening a database, migrations, ``SideStore`` for the small ones.
"""

from node.store.cases import MIGRATIONS, Changes, Store, StoreError

__all__ = ["MIGRATIONS", "Changes", "Store", "StoreError"]
