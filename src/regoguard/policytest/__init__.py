"""``regoguard test``: policy unit tests.

- YAML test files (``*_test.yaml``): calls with expected decisions, run through the real guard (engine +
  limits) with fresh limit state and a manual clock per case (``format``, ``runner``).
- Rego ``test_`` rules in the team's ``*_test.rego`` modules, run in worker processes because the
  embedded engine can crash on some ``with`` tests (``rego_files``, ``rego_tests``, ``rego_worker``).
- ``--coverage``: the rules no test saw deny a call (``coverage``). Output: ``report``; CLI: ``command``.
"""
