"""nginx-acme-sidecar: HTTPS for many sites behind a stock nginx container.

Layout (pure core, thin edges):

- ``settings``   typed settings from the environment
- ``model``      frozen domain types (sites, certificates, containers)
- ``domains``    strict domain-name validation
- ``labels``     container labels -> sites          (pure)
- ``options``    per-site options (TLS, HSTS, headers, ...) validated (pure)
- ``sitesfile``  YAML sites file -> sites           (pure)
- ``desired``    merge sources, resolve conflicts   (pure)
- ``certs``      read certificates with cryptography (pure parse + a small reader)
- ``planner``    desired + observed + now -> actions (pure)
- ``render``     sites + certificates -> nginx files (pure, Jinja2 templates)
- ``certbot``    certbot arguments and failure classification (pure)
- ``docker_api`` the only module that imports ``docker``
- ``nginx``      transactional apply: write, ``nginx -t``, reload, roll back
- ``reconciler`` the level-triggered loop that ties them together
"""

__version__ = "0.1.0"
