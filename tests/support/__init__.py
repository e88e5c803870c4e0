"""What the end-to-end tests (tests/e2e) and the benchmarks (bench/) share.

- ``net``: free ports, polling until something happens (``wait_for``) or checking that
  nothing does until a deadline (``stays``), and a verified HTTPS GET to 127.0.0.1;
- ``images``: the table of local test images, each overridable from the environment.
"""
