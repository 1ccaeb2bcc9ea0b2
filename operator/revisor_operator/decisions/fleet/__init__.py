"""``DatabaseMigrationSet``: one template, many databases or schemas, rolled out in waves.

Pure, like the rest of :mod:`..decisions`. In layers:

* :mod:`.words` — labels, annotations, phases and reasons, spelled once;
* :mod:`.spec` — the set's spec, parsed and checked, every problem at once;
* :mod:`.naming` — children's names, label values, the rollout's hash;
* :mod:`.targets` — the targets a spec and what exists make, and their waves;
* :mod:`.children` — a child ``DatabaseMigration``: its body, and what the
  set reads back from it;
* :mod:`.schemas` — the Jobs that run a schemas query, page by page;
* :mod:`.rollout` — the set's one decision: what to admit, remove, write;
* :mod:`.readiness` — ``revisor-operator wait dbmset/NAME``'s judgement.
"""
