"""nginx-acme-sidecar: HTTPS for many sites behind a stock nginx container.

The folders are the layers, imports only go downward (checked by ``lint-imports``):

- ``ops``       command line, HTTP status server and page, metrics, alerts
- ``engine``    the loop and its parts: world (snapshot), issuer, publisher, reporter, hooks
- ``sources``   what is wanted (labels, sites file, hand-written confs, consumers, compat
                readers) and the triggers that wake the loop
- ``adapters``  one module per third party: Docker (the only one importing ``docker``),
                certbot runner, ARI, nginx installer, probes
- ``state``     what is on disk: lineages, ledger, placeholders, run logs, atomic writes
- ``core``      pure decisions: model, validation, planner, schedule, rate limits, rendering
"""

__version__ = "0.1.0"
